/// Shared rules for turning gateway HTTP answers into results, so every plugin classifies
/// failures the same way (DESIGN §2).
public enum GatewaySupport {
    /// What a create request's answer means before its body is read.
    public enum CreateAnswer: Sendable {
        /// A 2xx answer with a JSON body: read it.
        case json(JSON, status: Int)
        /// Settled without reading the body (not sent, declined, unknown).
        case settled(PixResult)
    }

    /// Classifies the answer to a request that may create a charge:
    /// - not sent (DNS, connect, TLS, deadline before sending) → NOT_SENT;
    /// - sent without a complete answer (timeout, reset, too large) → UNKNOWN;
    /// - 400/401/403/404/405/413/415/422/429 → DECLINED (the gateway refused before creating);
    /// - 2xx whose body is not JSON (an HTML page, say) → UNKNOWN;
    /// - anything else (3xx, 408, 409, 5xx, …) → UNKNOWN.
    public static func classifyCreate(_ r: PluginHTTPResponse) -> CreateAnswer {
        guard r.sent else {
            return .settled(PixResult(.notSent, message: "request not sent (\(r.error)): \(r.errorMessage)"))
        }
        guard r.answered else {
            return .settled(PixResult(.unknown, message: "no complete answer (\(r.error)): \(r.errorMessage)"))
        }
        switch r.status {
        case 200..<300:
            guard let json = r.json else {
                return .settled(PixResult(.unknown, message: "HTTP \(r.status) with a non-JSON body: \(r.snippet)"))
            }
            return .json(json, status: r.status)
        case 400, 401, 403, 404, 405, 413, 415, 422, 429:
            return .settled(PixResult(.declined, message: "gateway refused (HTTP \(r.status)): \(errorText(r))"))
        default:
            return .settled(PixResult(.unknown, message: "HTTP \(r.status): \(errorText(r))"))
        }
    }

    /// Classifies the answer to a status lookup: the JSON body of a 2xx answer, `nil` for 404
    /// (no such charge), or a thrown error the host reports as UNKNOWN.
    public static func statusAnswer(_ r: PluginHTTPResponse) throws(PluginError) -> JSON? {
        guard r.answered else { throw .unavailable("no answer (\(r.error)): \(r.errorMessage)") }
        switch r.status {
        case 200..<300:
            guard let json = r.json else { throw .gateway("HTTP \(r.status) with a non-JSON body: \(r.snippet)") }
            return json
        case 404:
            return nil
        case 401, 403:
            throw .gateway("authentication refused (HTTP \(r.status))")
        default:
            throw .unavailable("HTTP \(r.status): \(errorText(r))")
        }
    }

    /// A gateway's `message`/`error` field, else the start of the body.
    public static func errorText(_ r: PluginHTTPResponse) -> String {
        if let j = r.json {
            for key in ["message", "error", "msg", "detail"] {
                if let t = j[key]?.text, !t.isEmpty { return t }
                if let t = j[key]?["message"]?.text, !t.isEmpty { return t }
            }
        }
        return r.snippet
    }

    /// A CREATED result, or UNKNOWN when the pix code fails the BR Code check (a garbled answer
    /// is not a success). The transaction id is kept either way, for the reconciler.
    public static func created(transactionID: String, gatewayHash: String = "", pixCode: String,
                               qrCodeBase64: String = "", expiresAtUnixMs: Int64 = 0, amountCents: Int64) -> PixResult {
        var r = PixResult(.created)
        r.transactionID = transactionID
        r.gatewayHash = gatewayHash
        r.pixCode = pixCode
        r.qrCodeBase64 = qrCodeBase64
        r.expiresAtUnixMs = expiresAtUnixMs
        if transactionID.isEmpty {
            r.outcome = .unknown
            r.message = "answer without a transaction id"
            return r
        }
        do {
            try BRCode.validate(pixCode)
        } catch {
            r.outcome = .unknown
            r.message = "gateway returned an invalid pix code: \(error)"
            return r
        }
        if let a = BRCode.amountCents(pixCode), a != amountCents {
            r.outcome = .unknown
            r.message = "pix code amount \(a) differs from the requested \(amountCents)"
        }
        return r
    }

    // MARK: - Reading gateways' bodies (their shapes vary by account and over time)

    /// A body's nesting levels, outermost first: `j`, then the object under the first of `keys`
    /// that holds one, and so on (at most `depth` more): `{"success": true, "data": {"data": {…}}}`
    /// gives three. The last is the innermost object.
    public static func levels(_ j: JSON, keys: [String] = ["data"], depth: Int = 3) -> [JSON] {
        var out = [j]
        var cur = j
        for _ in 0..<depth {
            guard let next = keys.lazy.compactMap({ cur[$0] }).first(where: { $0.object != nil }) else { break }
            out.append(next)
            cur = next
        }
        return out
    }

    /// The first non-empty text (string or number) under `keys`, in order.
    public static func text(_ j: JSON?, _ keys: [String]) -> String? {
        guard let j else { return nil }
        for k in keys {
            if let t = j[k]?.text, !t.isEmpty { return t }
        }
        return nil
    }

    /// True for our own references, `PAY-{digits}`.
    public static func isReference(_ s: String) -> Bool {
        s.hasPrefix("PAY-") && s.count > 4 && s.dropFirst(4).allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// Percent-encodes a path segment or query value (RFC 3986 unreserved characters kept).
    public static func percentEncode(_ s: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for b in s.utf8 {
            switch b {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(b)
            default:
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 15)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Digits only (documents and phones).
    public static func digits(_ s: String) -> String { String(s.filter { $0.isASCII && $0.isNumber }) }

    /// Parses the timestamps gateways send into Unix milliseconds: ISO 8601 with `Z` or an offset
    /// (`2025-01-31T12:00:00.000Z`, `…-03:00`), or `YYYY-MM-DD HH:MM:SS` without a zone, read at
    /// `defaultOffsetMinutes` (Brasília, UTC-3, by default), or integer Unix seconds/milliseconds.
    public static func parseTimestamp(_ text: String, defaultOffsetMinutes: Int = -180) -> Int64? {
        let s = Array(text.utf8)
        if !s.isEmpty, s.allSatisfy({ (0x30...0x39).contains($0) }), let n = Int64(text) {
            return n > 100_000_000_000 ? n : n * 1000
        }
        func num(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= s.count else { return nil }
            var v = 0
            for b in s[from..<(from + count)] {
                guard (0x30...0x39).contains(b) else { return nil }
                v = v * 10 + Int(b - 0x30)
            }
            return v
        }
        guard s.count >= 19, let y = num(0, 4), s[4] == 0x2D, let mo = num(5, 2), s[7] == 0x2D, let d = num(8, 2),
              s[10] == UInt8(ascii: "T") || s[10] == UInt8(ascii: " "), let h = num(11, 2), s[13] == 0x3A,
              let mi = num(14, 2), s[16] == 0x3A, let se = num(17, 2),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61 else { return nil }
        var i = 19
        var millis = 0
        if i < s.count, s[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < s.count, (0x30...0x39).contains(s[i]) {
                if digits < 3 { millis = millis * 10 + Int(s[i] - 0x30) }
                digits += 1
                i += 1
            }
            for _ in 0..<max(0, 3 - digits) { millis *= 10 }
        }
        var offset = defaultOffsetMinutes
        if i < s.count {
            if s[i] == UInt8(ascii: "Z") || s[i] == UInt8(ascii: "z") {
                offset = 0
                i += 1
            } else if s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
                let sign = s[i] == UInt8(ascii: "-") ? -1 : 1
                guard let oh = num(i + 1, 2) else { return nil }
                var j = i + 3
                if j < s.count, s[j] == 0x3A { j += 1 }
                guard let om = num(j, 2) else { return nil }
                offset = sign * (oh * 60 + om)
                i = j + 2
            }
        }
        guard i == s.count else { return nil }
        // Days from civil (Howard Hinnant's algorithm).
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = Int64(era * 146_097 + doe - 719_468)
        let seconds = days * 86_400 + Int64(h * 3600 + mi * 60 + se) - Int64(offset * 60)
        return seconds * 1000 + Int64(millis)
    }
}

// MARK: - Webhook rules shared by the gateway plugins

extension GatewaySupport {
    /// A webhook body parsed as a JSON object. Anything else throws
    /// `.invalidArgument("webhook body is not a JSON object")`: the host answers the gateway 400
    /// with that reason and keeps the body for the audit.
    public static func webhookObject(_ body: [UInt8]) throws(PluginError) -> JSON {
        guard let j = try? JSON.parse(body), j.object != nil else { throw .invalidArgument("webhook body is not a JSON object") }
        return j
    }

    /// `status` after the refund and chargeback markers found in `nodes` (a body and its nesting
    /// levels). Observed: UmbrellaPag sends `status: "paid"` next to a non-empty `refunds` array, or
    /// `type: "refund"`, for a charge it gave back. In any node, a non-empty `chargebacks` array or
    /// a `type` of `chargeback`/`chargedback` means CHARGEBACK; a non-empty `refunds` array or a
    /// `type` of `refund`/`refunded` means REFUNDED. A marker wins over PAID, PENDING and UNKNOWN (a
    /// chargeback also over REFUNDED); FAILED, EXPIRED and NOT_FOUND stand. Empty arrays and
    /// values of another kind are no marker.
    public static func reversal(_ status: PixStatus, markers nodes: [JSON]) -> PixStatus {
        var refunded = false, chargedBack = false
        for n in nodes {
            if let a = n["chargebacks"]?.array, !a.isEmpty { chargedBack = true }
            if let a = n["refunds"]?.array, !a.isEmpty { refunded = true }
            switch (n["type"]?.string ?? "").lowercased() {
            case "chargeback", "chargedback": chargedBack = true
            case "refund", "refunded": refunded = true
            default: break
            }
        }
        switch status {
        case .paid, .pending, .unknown: return chargedBack ? .chargeback : refunded ? .refunded : status
        case .refunded: return chargedBack ? .chargeback : status
        case .failed, .expired, .chargeback, .notFound: return status
        }
    }

    /// A stable webhook event id for a charge whose body has none: `{key}:{word}`, where `word` is
    /// the gateway's status word, or the status a refund/chargeback marker made of it (so a
    /// refund that still says `paid` never shares the paid event's id). The same delivery always
    /// gives the same id, so a retried webhook deduplicates.
    public static func eventID(_ key: String, rawStatus: String, status: PixStatus, mapped: PixStatus) -> String {
        let word = status == mapped ? rawStatus.lowercased() : "\(status)"
        return "\(key):\(word)"
    }
}
