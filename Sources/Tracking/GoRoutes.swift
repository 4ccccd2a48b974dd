import JSONKit
import MetaCAPI
import Redis
import RPC
import WebRoutes

/// `GET /go/{slug}` and `POST /t/{token}/cookies` on the HTTP/1.1 side door.
extension TrackingService {
    public func installRoutes(into routes: inout HTTPRoutes) {
        // Neither blocks (Redis, the outbox and the slug lookup are awaited): on the event loop.
        routes.add("GET", "/go/{slug}", onEventLoop: true) { [self] request, params in await go(request, slug: params["slug"] ?? "") }
        routes.add("POST", "/t/{token}/cookies", onEventLoop: true) { [self] request, params in await cookies(request, token: params["token"] ?? "") }
    }

    /// A click. Always a safe answer: a redirect, the landing page, or a small error page.
    func go(_ request: HTTPRequest, slug rawSlug: String) async -> HTTPResponse {
        let slug = rawSlug.lowercased()
        guard Slug.isValidName(slug) else { return page(404, LandingPage.notFound(), result: "not_found") }
        let query = FormFields(target: request.target)
        // Most clicks carry neither header: no arrays built for them.
        let cookies = FormFields(cookieHeaders: Self.values(of: "cookie", in: request.headers))
        var input = PageViewInput()
        input.slug = slug
        input.clientIP = configuration.trustedProxies.clientIP(
            peer: request.peer, forwardedFor: Self.values(of: "x-forwarded-for", in: request.headers))
        input.userAgent = request.header("user-agent") ?? ""
        input.eventSourceURL = eventSourceURL(request)
        let fbclid = query.strict("fbclid") ?? ""
        if FacebookCookies.isValidFbclid(fbclid) {
            input.fbclid = fbclid
        } else if query.has("fbclid") && !fbclid.isEmpty || query.has("fbclid") && query.strict("fbclid") == nil {
            // Refused, never cut: a shortened fbclid would attribute the click to nothing.
            metrics.increment("pixtrack_tracking_fbclid_rejected_total", help: "fbclid values refused (too long or not printable ASCII); the click went on without one.")
        }
        input.utmSource = query.lossy("utm_source"); input.utmMedium = query.lossy("utm_medium")
        input.utmCampaign = query.lossy("utm_campaign"); input.utmContent = query.lossy("utm_content")
        input.utmTerm = query.lossy("utm_term"); input.grim = query.lossy("grim")
        input.fbpCookie = cookies.strict("_fbp").flatMap { FacebookCookies.isValidFbp($0) ? $0 : nil } ?? query.strict("_fbp_cookie") ?? ""
        input.fbcCookie = cookies.strict("_fbc").flatMap { FacebookCookies.isValidFbc($0) ? $0 : nil } ?? query.strict("_fbc_cookie") ?? ""

        let result: PageViewResult
        do {
            result = try await recorder.record(input, degradeOnQueueFailure: true)
        } catch let e as RPCError {
            switch e.code {
            case .notFound, .invalidArgument: return page(404, LandingPage.notFound(), result: "not_found")
            case .failedPrecondition: return page(503, LandingPage.noBot(), result: "no_bot")
            default:
                logger.error("go_failed", ("slug", slug), ("code", e.code.name), ("error", String(describing: e.cause ?? e)))
                return page(503, LandingPage.unavailable(), result: "unavailable")
            }
        } catch {
            logger.error("go_failed", ("slug", slug), ("error", String(describing: error)))
            return page(503, LandingPage.unavailable(), result: "unavailable")
        }

        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(7)
        headers.append(("cache-control", "no-store"))
        headers.append(("referrer-policy", "no-referrer"))
        headers.append(("x-content-type-options", "nosniff"))
        if !result.setFbpCookie.isEmpty {
            let (prefix, suffix) = ("_fbp=", "; Max-Age=7776000; Path=/; SameSite=Lax")
            var cookie = ""
            cookie.reserveCapacity(prefix.utf8.count + result.setFbpCookie.utf8.count + suffix.utf8.count)
            cookie += prefix; cookie += result.setFbpCookie; cookie += suffix
            headers.append(("set-cookie", cookie))
        }
        guard let data = result.data, result.route.mode == .page else {
            countGo(result.crawler ? "crawler" : result.degraded ? "degraded" : "redirect")
            headers.append(("location", result.redirectURL))
            return HTTPResponse(status: 302, headers: headers)
        }
        countGo("page")
        let nonce = LandingPage.newNonce()
        let html = LandingPage.pixelPage(destination: result.redirectURL, token: data.token, pixelID: result.bot.metaPixelID,
                                         eventID: data.pageviewEventID, pixelScriptURL: configuration.pixelScriptURL,
                                         timeoutMs: configuration.pageRedirectTimeoutMs, nonce: nonce)
        return HTTPResponse(status: 200, headers: headers + [
            ("content-type", "text/html; charset=utf-8"),
            ("content-security-policy", LandingPage.pixelPagePolicy(nonce: nonce, pixelScriptURL: configuration.pixelScriptURL)),
        ], body: Array(html.utf8))
    }

    /// The landing page's beacon: the browser's `_fbp`/`_fbc`, merged into `tracking:{token}`.
    func cookies(_ request: HTTPRequest, token: String) async -> HTTPResponse {
        guard TrackingToken.isValid(token) else { return .jsonError(400, code: "invalid_argument", message: "not a tracking token") }
        guard request.body.count <= 4096 else { return .jsonError(413, code: "resource_exhausted", message: "body too large") }
        var fbp = "", fbc = ""
        if request.body.first == UInt8(ascii: "{"), let o = (try? JSON.parse(request.body))?.object {
            fbp = o["fbp"]?.string ?? ""
            fbc = o["fbc"]?.string ?? ""
        } else {
            let form = FormFields(query: String(decoding: request.body, as: UTF8.self))
            fbp = form.strict("fbp") ?? ""
            fbc = form.strict("fbc") ?? ""
        }
        do {
            guard try await store.mergeBrowserCookies(token: token, fbp: fbp, fbc: fbc) != nil else {
                return .jsonError(404, code: "not_found", message: "no tracking data for this token")
            }
            return HTTPResponse(status: 204, headers: [("cache-control", "no-store")])
        } catch {
            metrics.increment("pixtrack_tracking_redis_failures_total", help: "Redis operations of the tracking half that failed (the request went on).",
                              labels: [("operation", "merge_cookies")])
            logger.warning("tracking_redis_failed", ("operation", "merge_cookies"), ("error", String(describing: error)))
            return .jsonError(503, code: "unavailable", message: "cache unavailable")
        }
    }

    /// The values of every `name` header (lowercase), in order.
    static func values(of name: String, in headers: [(name: String, value: String)]) -> [String] {
        guard headers.contains(where: { $0.name == name }) else { return [] }
        return headers.filter { $0.name == name }.map(\.value)
    }

    /// The landing URL as the visitor sent it, for Meta's `event_source_url`.
    func eventSourceURL(_ request: HTTPRequest) -> String {
        if !configuration.publicBaseURL.isEmpty { return configuration.publicBaseURL + request.target }
        let fromProxy = configuration.trustedProxies.trusts(IPAddress.host(ofPeer: request.peer))
        let scheme = fromProxy ? (request.header("x-forwarded-proto").flatMap { $0 == "https" || $0 == "http" ? $0 : nil } ?? "http") : "http"
        let host = (fromProxy ? request.header("x-forwarded-host") : nil) ?? request.header("host") ?? ""
        guard !host.isEmpty, host.utf8.count <= 255, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") }) else {
            return ""
        }
        var url = ""  // one allocation, not one per piece
        url.reserveCapacity(scheme.utf8.count + 3 + host.utf8.count + request.target.utf8.count)
        url += scheme; url += "://"; url += host; url += request.target
        return url
    }

    private func page(_ status: Int, _ html: String, result: String) -> HTTPResponse {
        countGo(result)
        return HTTPResponse(status: status, headers: [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"),
                                                      ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer"),
                                                      ("content-security-policy", LandingPage.messagePagePolicy)],
                            body: Array(html.utf8))
    }

    private func countGo(_ result: String) {
        goResults.increment(result)
    }
}
