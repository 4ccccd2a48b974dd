import Testing
@testable import MetaCAPI

@Suite struct SHA256Tests {
    @Test func knownVectors() {
        #expect(SHA256Hex.of("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256Hex.of("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256Hex.of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }
}

@Suite struct MetaDeliveryTests {
    @Test func classifiesPerDesignSection3() {
        func c(_ r: MetaHTTPResponse) -> MetaDelivery { MetaDelivery.classify(r) }
        #expect(c(MetaHTTPResponse(status: 200, body: Array(#"{"events_received":2}"#.utf8))) == .delivered)
        for code in [1, 2, 4, 17, 341, 368, 613] {
            guard case .retry = c(.graphError(400, code: code)) else { Issue.record("code \(code) not retried"); continue }
        }
        guard case .retry = c(.graphError(400, code: 999, transient: true)) else { Issue.record("is_transient"); return }
        guard case .retry = c(MetaHTTPResponse(status: 503)) else { Issue.record("5xx"); return }
        guard case .retry = c(MetaHTTPResponse(status: 429, body: Array("{}".utf8))) else { Issue.record("429"); return }
        guard case .retry = c(MetaHTTPResponse(status: 0, failure: .timeout)) else { Issue.record("timeout"); return }
        guard case .retry = c(MetaHTTPResponse(status: 404, body: Array("<html>".utf8))) else { Issue.record("unexplained 404"); return }
        guard case .invalidEvent = c(.graphError(400, code: 100)) else { Issue.record("100"); return }
        for code in [190, 102, 10, 200, 294] {
            guard case .park = c(.graphError(400, code: code)) else { Issue.record("code \(code) not parked"); continue }
        }
    }

    @Test func backoffDoublesWithEqualJitterAndIsCapped() {
        let b = MetaBackoff(base: .seconds(2), maximum: .seconds(60))
        #expect(b.delayMs(attempt: 1, random: 0) == 1000 && b.delayMs(attempt: 1, random: 1) == 2000)
        #expect(b.delayMs(attempt: 3, random: 1) == 8000 && b.delayMs(attempt: 3, random: 0) == 4000)
        #expect(b.delayMs(attempt: 50, random: 1) == 60000 && b.delayMs(attempt: 50, random: 0) == 30000)
    }

    @Test func pageViewPayloadHasWhatMetaNeeds() {
        let e = MetaEvent.pageView(pixelID: "1", eventID: "pageview_x", eventTime: 1_700_000_000, eventSourceURL: "https://a/go/s",
                                   clientIP: "1.2.3.4", userAgent: "UA", fbp: "fb.1.1.2", fbc: "", fbclid: "abc")
        #expect(e.payload["action_source"] == "website" && e.payload["event_id"] == "pageview_x")
        #expect(e.payload["event_time"] == .int(1_700_000_000) && e.payload["event_source_url"] == "https://a/go/s")
        let ud = e.payload["user_data"]
        #expect(ud?["client_ip_address"] == "1.2.3.4" && ud?["client_user_agent"] == "UA" && ud?["fbp"] == "fb.1.1.2")
        #expect(ud?["fbc"] == nil && ud?["external_id"] == .string(SHA256Hex.of("abc")))
    }

    /// The click's PageView is written straight to text: the very text the generic event
    /// builder serializes to, whichever fields are empty.
    @Test func pageViewTextIsTheGenericEventsText() {
        let cases: [(ip: String, ua: String, fbp: String, fbc: String, fbclid: String, url: String)] = [
            ("203.0.113.7", "Mozilla/5.0 \"q\" \\ é\u{1}", "fb.1.2.3", "fb.1.2.IwAR", "IwAR_x", "https://go.example.com/go/s?a=1&b=<2>"),
            ("", "", "", "", "", ""),
            ("::1", "UA", "", "fb.1.2.c", "", "https://a/go/s"),
        ]
        for c in cases {
            let direct = MetaEvent.pageView(pixelID: "123", eventID: "pageview_1", eventTime: 1_764_000_000, eventSourceURL: c.url,
                                            clientIP: c.ip, userAgent: c.ua, fbp: c.fbp, fbc: c.fbc, fbclid: c.fbclid, testEventCode: "T1")
            let generic = MetaEvent.website(pixelID: "123", eventName: MetaEvent.pageViewName, eventID: "pageview_1", eventTime: 1_764_000_000,
                                            eventSourceURL: c.url,
                                            visitor: .init(clientIP: c.ip, userAgent: c.ua, fbp: c.fbp, fbc: c.fbc,
                                                           externalIDs: c.fbclid.isEmpty ? [] : [c.fbclid]),
                                            testEventCode: "T1")
            #expect(direct.payloadText == generic.payloadText, "\(direct.payloadText)")
            #expect(direct == generic && direct.payload == generic.payload)
        }
    }
}
