import JSONKit

/// One Conversions API event waiting in the outbox: which pixel it goes to and the event object
/// that becomes one element of the request's `data` array.
public struct MetaEvent: Sendable, Equatable {
    /// The Meta pixel (dataset) id: digits.
    public var pixelID: String
    /// `PageView`, `Purchase`, …
    public var eventName: String

    public static let pageViewName = "PageView"
    /// Never sent twice by us: one whose request went unanswered is parked, not retried.
    public static let purchaseName = "Purchase"
    /// Stable across retries: Meta deduplicates on (`event_name`, `event_id`).
    public var eventID: String
    /// Unix seconds (UTC).
    public var eventTime: Int64
    /// The whole event object (`event_name`, `event_time`, `event_id`, `user_data`, …).
    public var payload: JSON {
        get {
            switch body {
            case .value(let v): v
            case .text(let t): (try? JSON.parse(Array(t.utf8))) ?? .null
            }
        }
        set { body = .value(newValue) }
    }
    /// Meta's test_event_code for test deliveries; empty in production.
    public var testEventCode: String

    /// The event object as a value, or already as its JSON text (a click's PageView is written
    /// straight to text: it is only ever stored, never read back in this process).
    private enum Body: Sendable {
        case value(JSON)
        case text(String)
    }
    private var body: Body

    /// The event object's JSON text (what the outbox stores).
    public var payloadText: String {
        switch body {
        case .value(let v): v.serialized
        case .text(let t): t
        }
    }

    public init(pixelID: String, eventName: String, eventID: String, eventTime: Int64, payload: JSON, testEventCode: String = "") {
        self.init(pixelID: pixelID, eventName: eventName, eventID: eventID, eventTime: eventTime, body: .value(payload),
                  testEventCode: testEventCode)
    }

    private init(pixelID: String, eventName: String, eventID: String, eventTime: Int64, body: Body, testEventCode: String) {
        self.pixelID = pixelID
        self.eventName = eventName
        self.eventID = eventID
        self.eventTime = eventTime
        self.body = body
        self.testEventCode = testEventCode
    }

    /// Equal when every field and the event object are (whichever form each holds).
    public static func == (a: MetaEvent, b: MetaEvent) -> Bool {
        a.pixelID == b.pixelID && a.eventName == b.eventName && a.eventID == b.eventID && a.eventTime == b.eventTime
            && a.testEventCode == b.testEventCode && a.payload == b.payload
    }

    /// What a website event knows about the visitor. Empty strings are left out of `user_data`.
    public struct WebsiteVisitor: Sendable, Equatable {
        public var clientIP: String
        public var userAgent: String
        public var fbp: String
        public var fbc: String
        /// Raw identifiers for `external_id`; sent as SHA-256 hex of each (DESIGN §3).
        public var externalIDs: [String]

        public init(clientIP: String = "", userAgent: String = "", fbp: String = "", fbc: String = "", externalIDs: [String] = []) {
            self.clientIP = clientIP
            self.userAgent = userAgent
            self.fbp = fbp
            self.fbc = fbc
            self.externalIDs = externalIDs
        }

        /// The `user_data` object: IP, user agent, fbp and fbc unhashed, external ids hashed.
        public var userData: JSON {
            var o: [String: JSON] = [:]
            if !clientIP.isEmpty { o["client_ip_address"] = .string(clientIP) }
            if !userAgent.isEmpty { o["client_user_agent"] = .string(userAgent) }
            if !fbp.isEmpty { o["fbp"] = .string(fbp) }
            if !fbc.isEmpty { o["fbc"] = .string(fbc) }
            let ids = externalIDs.filter { !$0.isEmpty }.map { JSON.string(SHA256Hex.of($0)) }
            if ids.count == 1 { o["external_id"] = ids[0] } else if !ids.isEmpty { o["external_id"] = .array(ids) }
            return .object(o)
        }
    }

    /// A website event with `action_source: "website"` (DESIGN §3); `customData` goes in
    /// `custom_data` when non-empty.
    public static func website(pixelID: String, eventName: String, eventID: String, eventTime: Int64,
                               eventSourceURL: String, visitor: WebsiteVisitor, customData: [String: JSON] = [:],
                               testEventCode: String = "") -> MetaEvent {
        var o: [String: JSON] = [
            "event_name": .string(eventName), "event_time": .int(eventTime), "event_id": .string(eventID),
            "action_source": "website", "user_data": visitor.userData,
        ]
        if !eventSourceURL.isEmpty { o["event_source_url"] = .string(eventSourceURL) }
        if !customData.isEmpty { o["custom_data"] = .object(customData) }
        return MetaEvent(pixelID: pixelID, eventName: eventName, eventID: eventID, eventTime: eventTime,
                         payload: .object(o), testEventCode: testEventCode)
    }

    /// The PageView of a click: `event_id` = the pageview_event_id, external_id = SHA-256 of
    /// the fbclid when there is one.
    ///
    /// Written straight to JSON text (one per click): the same text `website(…)` serializes to.
    public static func pageView(pixelID: String, eventID: String, eventTime: Int64, eventSourceURL: String,
                                clientIP: String, userAgent: String, fbp: String, fbc: String, fbclid: String,
                                testEventCode: String = "") -> MetaEvent {
        var w = JSONObjectWriter(capacity: 320 + userAgent.utf8.count + eventSourceURL.utf8.count)
        w.string("action_source", "website")
        w.string("event_id", eventID)
        w.string("event_name", pageViewName)
        w.nonEmpty("event_source_url", eventSourceURL)
        w.int("event_time", eventTime)
        w.object("user_data") { u in
            u.nonEmpty("client_ip_address", clientIP)
            u.nonEmpty("client_user_agent", userAgent)
            if !fbclid.isEmpty { u.string("external_id", SHA256Hex.of(fbclid)) }
            u.nonEmpty("fbc", fbc)
            u.nonEmpty("fbp", fbp)
        }
        return MetaEvent(pixelID: pixelID, eventName: pageViewName, eventID: eventID, eventTime: eventTime,
                         body: .text(String(decoding: w.finish(), as: UTF8.self)), testEventCode: testEventCode)
    }
}
