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
    public var payload: JSON
    /// Meta's test_event_code for test deliveries; empty in production.
    public var testEventCode: String

    public init(pixelID: String, eventName: String, eventID: String, eventTime: Int64, payload: JSON, testEventCode: String = "") {
        self.pixelID = pixelID
        self.eventName = eventName
        self.eventID = eventID
        self.eventTime = eventTime
        self.payload = payload
        self.testEventCode = testEventCode
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
    public static func pageView(pixelID: String, eventID: String, eventTime: Int64, eventSourceURL: String,
                                clientIP: String, userAgent: String, fbp: String, fbc: String, fbclid: String,
                                testEventCode: String = "") -> MetaEvent {
        website(pixelID: pixelID, eventName: pageViewName, eventID: eventID, eventTime: eventTime,
                eventSourceURL: eventSourceURL,
                visitor: WebsiteVisitor(clientIP: clientIP, userAgent: userAgent, fbp: fbp, fbc: fbc,
                                        externalIDs: fbclid.isEmpty ? [] : [fbclid]),
                testEventCode: testEventCode)
    }
}
