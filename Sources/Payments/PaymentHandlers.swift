import MessageRPC
import PixTrackMessages
import PluginHost
import RPC

/// `pixtrack.v1.PaymentService` over RPC, and the `POST /webhooks/{gateway}/{secret}` handler.
public struct PaymentHandlers: Sendable {
    public static let serviceName = "pixtrack.v1.PaymentService"
    let service: PaymentService
    let inbox: WebhookInbox
    /// Called after a webhook was stored (wakes the processor).
    let stored: @Sendable () -> Void
    /// The client's address (X-Forwarded-For believed only from trusted proxies).
    let clientIP: @Sendable (HTTPRequest) -> String
    let guesses: SecretGuessLimiter
    /// `WatchPayments`; nil answers UNAVAILABLE.
    let watchers: PaymentWatchers?
    let notifications: NotificationSender?

    public init(service: PaymentService, inbox: WebhookInbox, stored: @escaping @Sendable () -> Void = {},
                clientIP: @escaping @Sendable (HTTPRequest) -> String = { $0.peer },
                guesses: SecretGuessLimiter = SecretGuessLimiter(), watchers: PaymentWatchers? = nil,
                notifications: NotificationSender? = nil) {
        self.service = service
        self.inbox = inbox
        self.stored = stored
        self.clientIP = clientIP
        self.guesses = guesses
        self.watchers = watchers
        self.notifications = notifications
    }

    /// `WatchPayments` (server streaming, served as a streaming method that reads one request).
    var watchMethod: RPCMethod {
        let watchers = self.watchers
        return RPCMethod(service: Self.serviceName, method: "WatchPayments", kind: .bidiStreaming { requests, writer, context in
            var first: [UInt8]?
            for await m in requests { first = m; break }
            guard let bytes = first else { throw RPCError(.invalidArgument, "WatchPayments needs a WatchPaymentsRequest") }
            let r = try decodeRequest(bytes, as: Pixtrack_V1_WatchPaymentsRequest.self)
            guard let watchers else { throw RPCError(.unavailable, "watches are not served by this instance") }
            try await watchers.watch(botID: r.botId, afterCursor: r.afterCursor, connection: context.peer) {
                try await writer.send($0)
            }
        })
    }

    static func unary<Request: GeneratedMessage, Response: GeneratedMessage>(
        _ name: String, _ request: Request.Type, _ body: @escaping @Sendable (Request) async throws -> Response
    ) -> RPCMethod {
        RPCMethod.unary(service: serviceName, method: name, body)
    }

    public var methods: [RPCMethod] {
        let s = service, inbox = self.inbox
        return [
            Self.unary("GeneratePix", Pixtrack_V1_GeneratePixRequest.self) { r in
                var input = GeneratePixInput(botID: r.botId, telegramUserID: r.telegramUserId, amountCents: r.amountCents)
                input.description = r.description
                input.idempotencyKey = r.idempotencyKey
                if let c = r.customer {
                    input.customer = GatewayCustomer(name: c.name, email: c.email, phone: c.phone, document: c.document)
                }
                return try await s.generatePix(input).message
            },
            Self.unary("GetPayment", Pixtrack_V1_GetPaymentRequest.self) { r in
                let p: Payment?
                switch r.key {
                case .id(let id)?:
                    p = try await s.get(id: id)
                case .reference(let reference)? where !reference.isEmpty:
                    p = try await s.get(reference: reference)
                case .gatewayTransactionId(let transactionID)? where !transactionID.isEmpty:
                    p = try await s.get(gateway: r.gateway, transactionID: transactionID)
                default:
                    throw RPCError(.invalidArgument, "give id, reference or gateway_transaction_id")
                }
                guard let p else { throw RPCError(.notFound, "no such payment") }
                return p.message
            },
            Self.unary("ListPayments", Pixtrack_V1_ListPaymentsRequest.self) { r in
                var f = PaymentFilter()
                for status in r.statuses {
                    let n = status.rawValue
                    guard let st = PaymentStatus(protoNumber: n) else { throw RPCError(.invalidArgument, "unknown status \(n)") }
                    f.statuses.append(st)
                }
                f.botID = r.botId
                f.telegramUserID = r.telegramUserId
                f.gateway = r.gateway
                f.createdAfterMs = r.createdAfterUnixMs
                f.createdBeforeMs = r.createdBeforeUnixMs
                f.flagged = switch r.review { case .flagged: true; case .notFlagged: false; default: nil }
                f.pageSize = Int(r.pageSize)
                f.pageToken = r.pageToken
                let (rows, next) = try await s.list(f)
                var out = Pixtrack_V1_ListPaymentsResponse()
                out.payments = rows.map(\.message)
                out.nextPageToken = next
                return out
            },
            Self.unary("ReconcilePayment", Pixtrack_V1_ReconcilePaymentRequest.self) { r in
                let id: Int64
                if case .id(let v)? = r.key {
                    id = v
                } else if case .reference(let reference)? = r.key, let v = Payment.id(fromReference: reference) {
                    id = v
                } else {
                    throw RPCError(.invalidArgument, "give id or reference PAY-{id}")
                }
                let a = try await s.reconcile(id: id)
                var out = Pixtrack_V1_ReconcilePaymentResponse()
                out.payment = a.payment.message
                out.previousStatus = Pixtrack_V1_PaymentStatus(rawValue: a.previous.protoNumber)
                out.changed = a.changed
                return out
            },
            Self.unary("ResolvePayment", Pixtrack_V1_ResolvePaymentRequest.self) { r in
                let a = try await s.resolve(reference: r.reference, transactionID: r.gatewayTransactionId)
                var out = Pixtrack_V1_ResolvePaymentResponse()
                out.payment = a.payment.message
                out.previousStatus = Pixtrack_V1_PaymentStatus(rawValue: a.previous.protoNumber)
                out.changed = a.changed
                out.message = WebhookInbox.describe(a)
                return out
            },
            Self.unary("HandleWebhook", Pixtrack_V1_HandleWebhookRequest.self) { r in
                let gateway = r.gateway
                guard inbox.accepts(gateway: gateway, secret: r.secret) else {
                    throw RPCError(.notFound, "no webhook endpoint for that gateway and secret")
                }
                let headers = WebhookInbox.keptHeaders(r.headers.map { GatewayHeader($0.name, $0.value) })
                let id: Int64
                do {
                    id = try await inbox.store(gateway: gateway, headers: headers, body: r.body, remoteAddr: r.remoteAddr,
                                               processingInline: true)
                } catch {
                    throw RPCError(.unavailable, "database unavailable")
                }
                let result = await inbox.process(id: id, gateway: gateway, headers: headers, body: r.body, attempts: 1)
                // Stored for the audit, but the plugin refused the body: retrying cannot help.
                if result.inboxStatus == "rejected" { throw RPCError(.invalidArgument, result.message) }
                var out = Pixtrack_V1_HandleWebhookResponse()
                out.accepted = true
                out.inboxId = id
                out.paymentId = result.paymentID
                if let st = result.status { out.status = Pixtrack_V1_PaymentStatus(rawValue: st.protoNumber) }
                out.message = result.message
                return out
            },
            Self.unary("ListGateways", Pixtrack_V1_ListGatewaysRequest.self) { _ in
                var out = Pixtrack_V1_ListGatewaysResponse()
                out.gateways = s.gateways.listings.map { g in
                    var m = Pixtrack_V1_Gateway()
                    m.name = g.name
                    m.version = g.version
                    m.path = g.path
                    m.sha256 = g.sha256
                    m.loaded = g.loaded
                    m.loadError = g.loadError
                    m.isolation = g.isolation
                    if g.loaded {
                        var abi = Pixtrack_V1_AbiVersion()
                        abi.major = g.abiMajor
                        abi.minor = g.abiMinor
                        m.abiVersion = abi
                        m.healthy = g.healthy
                        m.runnerRestarts = Int64(g.runnerRestarts)
                    }
                    return m
                }
                return out
            },
            Self.unary("RequeueNotifications", Pixtrack_V1_RequeueNotificationsRequest.self) { [notifications] r in
                guard let notifications else { throw RPCError(.unavailable, "notifications are not sent by this instance") }
                var cursors: [Int64] = []
                for c in r.cursors {
                    guard let v = PaymentEventCursor.parse(c) else { throw RPCError(.invalidArgument, "'\(c)' is not a cursor") }
                    cursors.append(v.id)
                }
                guard cursors.count <= 1000 else { throw RPCError(.invalidArgument, "at most 1000 cursors") }
                let n = try await notifications.requeue(botID: r.botId, cursors: cursors, dryRun: r.dryRun)
                var out = Pixtrack_V1_RequeueNotificationsResponse()
                out.requeued = Int64(n)
                return out
            },
            watchMethod,
        ]
    }

    /// `POST /webhooks/{gateway}/{secret}`: wrong secret → 404 and nothing stored; stored, then
    /// parsed by the plugin (local, no network): a body it refuses → 400 with its reason (the row
    /// stays, `rejected`, for the audit); otherwise 200 at once and matching/confirmation follows
    /// in the background; PostgreSQL down → 503 (the gateway retries).
    public func webhookRoute(_ request: HTTPRequest, _ params: [String: String]) async -> HTTPResponse {
        let gateway = params["gateway"] ?? "", secret = params["secret"] ?? ""
        let client = clientIP(request)
        guard guesses.allows(client) else {
            service.count("webhook", "throttled")
            return HTTPResponse(status: 429, headers: [("content-type", "application/json"), ("retry-after", "60")],
                                body: Array(#"{"code":"resource_exhausted","message":"too many webhook requests with a wrong secret; retry later"}"#.utf8))
        }
        guard inbox.accepts(gateway: gateway, secret: secret) else {
            guesses.failed(client)
            service.count("webhook", "rejected_secret")
            return .jsonError(404, code: "not_found", message: "no route for POST /webhooks/…")
        }
        let headers = WebhookInbox.keptHeaders(request.headers.map { GatewayHeader($0.name, $0.value) })
        let id: Int64
        do {
            id = try await inbox.store(gateway: gateway, headers: headers, body: request.body, remoteAddr: request.peer)
        } catch {
            service.logger.error("webhook_not_stored", ("gateway", gateway), ("error", String(describing: error)))
            return .jsonError(503, code: "unavailable", message: "could not store the webhook; retry")
        }
        let verdict = await inbox.parse(gateway: gateway, headers: headers, body: request.body)
        if case .rejected = verdict {
            // Recorded by the one code path that records results (counted, row `rejected`).
            let result = await inbox.process(id: id, gateway: gateway, verdict: verdict, attempts: 1)
            return .jsonError(400, code: "invalid_argument", message: "\(result.message) (stored as webhook \(id))")
        }
        stored()
        return HTTPResponse(status: 200, headers: [("content-type", "application/json")], body: Array("{\"ok\":true,\"id\":\(id)}".utf8))
    }
}
