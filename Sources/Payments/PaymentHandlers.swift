import PluginHost
import ProtoCodec
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
            let r: ProtoMessage
            do { r = try ProtoCodec.decode(bytes, as: "pixtrack.v1.WatchPaymentsRequest") } catch {
                throw RPCError(.invalidArgument, "request is not a valid pixtrack.v1.WatchPaymentsRequest")
            }
            guard let watchers else { throw RPCError(.unavailable, "watches are not served by this instance") }
            try await watchers.watch(botID: r.int64("bot_id"), afterCursor: r.string("after_cursor"), connection: context.peer) {
                try await writer.send($0)
            }
        })
    }

    public var methods: [RPCMethod] {
        let s = service, inbox = self.inbox
        func unary(_ name: String, _ body: @escaping @Sendable (ProtoMessage) async throws -> ProtoMessage) -> RPCMethod {
            RPCMethod(service: Self.serviceName, method: name, kind: .unary { bytes, _ in
                let request: ProtoMessage
                do {
                    request = try ProtoCodec.decode(bytes, as: "pixtrack.v1.\(name)Request")
                } catch {
                    throw RPCError(.invalidArgument, "request is not a valid pixtrack.v1.\(name)Request")
                }
                let response = try await body(request)
                do { return try ProtoCodec.encode(response) } catch { throw RPCError(.internal, "internal error") }
            })
        }
        return [
            unary("GeneratePix") { r in
                var input = GeneratePixInput(botID: r.int64("bot_id"), telegramUserID: r.int64("telegram_user_id"),
                                             amountCents: r.int64("amount_cents"))
                input.description = r.string("description")
                input.idempotencyKey = r.string("idempotency_key")
                if let c = r.message("customer") {
                    input.customer = GatewayCustomer(name: c.string("name"), email: c.string("email"),
                                                     phone: c.string("phone"), document: c.string("document"))
                }
                return try await s.generatePix(input).proto
            },
            unary("GetPayment") { r in
                let p: Payment?
                if case .int64(let id)? = r["id"] {
                    p = try await s.get(id: id)
                } else if !r.string("reference").isEmpty {
                    p = try await s.get(reference: r.string("reference"))
                } else if !r.string("gateway_transaction_id").isEmpty {
                    p = try await s.get(gateway: r.string("gateway"), transactionID: r.string("gateway_transaction_id"))
                } else {
                    throw RPCError(.invalidArgument, "give id, reference or gateway_transaction_id")
                }
                guard let p else { throw RPCError(.notFound, "no such payment") }
                return p.proto
            },
            unary("ListPayments") { r in
                var f = PaymentFilter()
                for case .enumValue(let n) in r.list("statuses") {
                    guard let st = PaymentStatus(protoNumber: n) else { throw RPCError(.invalidArgument, "unknown status \(n)") }
                    f.statuses.append(st)
                }
                f.botID = r.int64("bot_id")
                f.telegramUserID = r.int64("telegram_user_id")
                f.gateway = r.string("gateway")
                f.createdAfterMs = r.int64("created_after_unix_ms")
                f.createdBeforeMs = r.int64("created_before_unix_ms")
                f.flagged = switch r.enumValue("review") { case 1: true; case 2: false; default: nil }
                f.pageSize = Int(r.int32("page_size"))
                f.pageToken = r.string("page_token")
                let (rows, next) = try await s.list(f)
                var out = ProtoMessage("pixtrack.v1.ListPaymentsResponse", ["payments": .list(rows.map { .message($0.proto) })])
                if !next.isEmpty { out["next_page_token"] = .string(next) }
                return out
            },
            unary("ReconcilePayment") { r in
                let id: Int64
                if case .int64(let v)? = r["id"] { id = v } else if let v = Payment.id(fromReference: r.string("reference")) { id = v } else {
                    throw RPCError(.invalidArgument, "give id or reference PAY-{id}")
                }
                let a = try await s.reconcile(id: id)
                return ProtoMessage("pixtrack.v1.ReconcilePaymentResponse", [
                    "payment": .message(a.payment.proto), "previous_status": .enumValue(a.previous.protoNumber),
                    "changed": .bool(a.changed),
                ])
            },
            unary("ResolvePayment") { r in
                let a = try await s.resolve(reference: r.string("reference"), transactionID: r.string("gateway_transaction_id"))
                var out = ProtoMessage("pixtrack.v1.ResolvePaymentResponse", [
                    "payment": .message(a.payment.proto), "previous_status": .enumValue(a.previous.protoNumber),
                    "changed": .bool(a.changed),
                ])
                let message = WebhookInbox.describe(a)
                if !message.isEmpty { out["message"] = .string(message) }
                return out
            },
            unary("HandleWebhook") { r in
                let gateway = r.string("gateway")
                guard inbox.accepts(gateway: gateway, secret: r.string("secret")) else {
                    throw RPCError(.notFound, "no webhook endpoint for that gateway and secret")
                }
                var headers: [GatewayHeader] = []
                for case .message(let h) in r.list("headers") { headers.append(GatewayHeader(h.string("name"), h.string("value"))) }
                headers = WebhookInbox.keptHeaders(headers)
                let id: Int64
                do {
                    id = try await inbox.store(gateway: gateway, headers: headers, body: r.bytes("body"), remoteAddr: r.string("remote_addr"),
                                               processingInline: true)
                } catch {
                    throw RPCError(.unavailable, "database unavailable")
                }
                let result = await inbox.process(id: id, gateway: gateway, headers: headers, body: r.bytes("body"), attempts: 1)
                // Stored for the audit, but the plugin refused the body: retrying cannot help.
                if result.inboxStatus == "rejected" { throw RPCError(.invalidArgument, result.message) }
                var out = ProtoMessage("pixtrack.v1.HandleWebhookResponse", ["accepted": .bool(true), "inbox_id": .int64(id)])
                if result.paymentID != 0 { out["payment_id"] = .int64(result.paymentID) }
                if let st = result.status { out["status"] = .enumValue(st.protoNumber) }
                if !result.message.isEmpty { out["message"] = .string(result.message) }
                return out
            },
            unary("ListGateways") { _ in
                ProtoMessage("pixtrack.v1.ListGatewaysResponse", ["gateways": .list(s.gateways.listings.map { g in
                    var m = ProtoMessage("pixtrack.v1.Gateway", ["loaded": .bool(g.loaded)])
                    for (k, v) in [("name", g.name), ("version", g.version), ("path", g.path), ("sha256", g.sha256), ("load_error", g.loadError),
                                   ("isolation", g.isolation)]
                    where !v.isEmpty { m[k] = .string(v) }
                    if g.loaded {
                        m["abi_version"] = .message(ProtoMessage("pixtrack.v1.AbiVersion", ["major": .uint32(g.abiMajor), "minor": .uint32(g.abiMinor)]))
                        m["healthy"] = .bool(g.healthy)
                        if g.runnerRestarts > 0 { m["runner_restarts"] = .int64(Int64(g.runnerRestarts)) }
                    }
                    return .message(m)
                })])
            },
            unary("RequeueNotifications") { [notifications] r in
                guard let notifications else { throw RPCError(.unavailable, "notifications are not sent by this instance") }
                var cursors: [Int64] = []
                for case .string(let c) in r.list("cursors") {
                    guard let v = PaymentEventCursor.parse(c) else { throw RPCError(.invalidArgument, "'\(c)' is not a cursor") }
                    cursors.append(v)
                }
                guard cursors.count <= 1000 else { throw RPCError(.invalidArgument, "at most 1000 cursors") }
                let n = try await notifications.requeue(botID: r.int64("bot_id"), cursors: cursors, dryRun: r.bool("dry_run"))
                return ProtoMessage("pixtrack.v1.RequeueNotificationsResponse", n == 0 ? [:] : ["requeued": .int64(Int64(n))])
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
