import Testing
@testable import Tracking

@Suite struct TokenRuleTests {
    @Test func tokensAreUUIDv4Hex() {
        let t = TrackingToken.generate()
        #expect(TrackingToken.isValid(t) && Array(t)[12] == "4" && "89ab".contains(Array(t)[16]))
        #expect(TrackingToken.newPageViewEventID().hasPrefix("pageview_") && TrackingToken.newPageViewEventID().count == 41)
        let event = TrackingToken.newPageViewEventID()
        #expect(TrackingToken.isValid(String(event.dropFirst(9))) && Array(event)[9 + 12] == "4" && "89ab".contains(Array(event)[9 + 16]))
        #expect(Set((0..<1000).map { _ in TrackingToken.generate() }).count == 1000)
        for bad in ["", "ABCDEF0123456789ABCDEF0123456789", String(t.dropLast()), t + "0", "g" + t.dropFirst()] {
            #expect(!TrackingToken.isValid(bad), "\(bad)")
        }
    }

    @Test func startParameters() {
        let t = "0123456789abcdef0123456789abcdef"
        #expect(StartParameter(t) == .token(t, pixelID: nil))
        #expect(StartParameter(" \(t)\n") == .token(t, pixelID: nil))
        #expect(StartParameter("\(t)__px_123456789") == .token(t, pixelID: "123456789"))
        for other in ["", "hello", "\(t)__px_", "\(t)__px_abc", "\(t)_px_1", t.uppercased(), "tracking_123", "\(t)x"] {
            #expect(StartParameter(other) == .other(other), "\(other)")
        }
    }
}

@Suite struct CookieAndCrawlerTests {
    @Test func fbpAndFbcFormats() {
        let fbp = FacebookCookies.newFbp(nowMs: 1_700_000_000_123)
        #expect(FacebookCookies.isValidFbp(fbp) && fbp.hasPrefix("fb.1.1700000000123."))
        #expect(Int64(fbp.split(separator: ".")[3])! <= Int64(Int32.max))
        #expect(!FacebookCookies.isValidFbp("fb.1.abc.1") && !FacebookCookies.isValidFbp("") && !FacebookCookies.isValidFbp("fb.1.1.2.3"))
        #expect(FacebookCookies.isValidFbc("fb.1.1700000000000.IwAR-x_Y") && !FacebookCookies.isValidFbc("fb.1.1700000000000."))
        #expect(FacebookCookies.fbc(fromFbclid: "AbC", nowMs: 5) == "fb.1.5.AbC")
        #expect(FacebookCookies.isValidFbclid(String(repeating: "a", count: 255)))
        #expect(!FacebookCookies.isValidFbclid(String(repeating: "a", count: 256)) && !FacebookCookies.isValidFbclid("a b"))
    }

    @Test(arguments: ["facebookexternalhit/1.1", "Mozilla/5.0 (compatible; Googlebot/2.1)", "FACEBOT", "WhatsApp/2.2",
                      "Slackbot-LinkExpanding 1.0", "TelegramBot (like TwitterBot)", "meta-externalagent/1.1", "bingbot/2.0",
                      "x".padding(toLength: 300, withPad: "y", startingAt: 0) + "FacebookExternalHit", "bingbot",
                      "Mözilla/5.0 (kompatibel; GoOgLeBoT/2.1; ü)"])
    func crawlers(_ ua: String) { #expect(CrawlerDetector.isCrawler(userAgent: ua)) }

    @Test(arguments: [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 [FBAN/FBIOS;FBAV/458.0.0.43.112;FBBV/1]",
        "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/460.0.0.48.109;]",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0", "", "bingbo", "googlebo", "facebookexternalhi",
    ])
    func people(_ ua: String) { #expect(!CrawlerDetector.isCrawler(userAgent: ua)) }

    /// The one-pass matcher agrees with the plain definition (lowercased, then substring) for
    /// every marker at every position of a user agent, in mixed case, and for each marker cut
    /// short by one byte at the very end (the bound the scan must not run past).
    @Test func agreesWithLowercasedContainsAtEveryPosition() {
        let base = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36"
        let reference = { (ua: String) in CrawlerDetector.markers.contains { ua.lowercased().contains($0) } }
        var checked = 0
        for marker in CrawlerDetector.markers {
            let mixed = String(marker.enumerated().map { $0.offset % 2 == 0 ? Character($0.element.uppercased()) : $0.element })
            for cut in stride(from: 0, through: base.count, by: 7) {
                let at = base.index(base.startIndex, offsetBy: cut)
                for ua in [String(base[..<at]) + mixed + base[at...], String(base[..<at]) + mixed.dropLast()] {
                    #expect(CrawlerDetector.isCrawler(userAgent: ua) == reference(ua), "\(ua)")
                    checked += 1
                }
            }
            #expect(CrawlerDetector.isCrawler(userAgent: mixed) && !CrawlerDetector.isCrawler(userAgent: String(mixed.dropLast())))
        }
        #expect(checked > 300 && !CrawlerDetector.isCrawler(userAgent: base))
    }
}

@Suite struct TrustedProxiesTests {
    @Test func forwardedForOnlyFromTrustedPeers() throws {
        let p = try TrustedProxies(parsing: "127.0.0.1, 10.0.0.0/8,::1,2001:db8::/32")
        #expect(p.clientIP(peer: "192.0.2.1:5000", forwardedFor: ["203.0.113.5"]) == "192.0.2.1")
        #expect(p.clientIP(peer: "127.0.0.1:5000", forwardedFor: ["203.0.113.5"]) == "203.0.113.5")
        #expect(p.clientIP(peer: "127.0.0.1:5000", forwardedFor: ["1.1.1.1, 203.0.113.5, 10.9.8.7"]) == "203.0.113.5")
        #expect(p.clientIP(peer: "127.0.0.1:5000", forwardedFor: ["1.1.1.1", "203.0.113.5"]) == "203.0.113.5")
        #expect(p.clientIP(peer: "127.0.0.1:5000", forwardedFor: ["junk, 10.0.0.2"]) == "10.0.0.2")
        #expect(p.clientIP(peer: "127.0.0.1:5000", forwardedFor: []) == "127.0.0.1")
        #expect(p.clientIP(peer: "[::1]:80", forwardedFor: ["2001:db9::7"]) == "2001:db9::7")
        #expect(p.clientIP(peer: "[::1]:80", forwardedFor: ["::ffff:198.51.100.2"]) == "198.51.100.2")
        #expect(p.trusts("2001:db8:ffff::1") && !p.trusts("2001:db9::1") && !p.trusts("11.0.0.1"))
        #expect(TrustedProxies().clientIP(peer: "127.0.0.1:1", forwardedFor: ["9.9.9.9"]) == "127.0.0.1")
        #expect(throws: TrackingConfigurationError.self) { try TrustedProxies(parsing: "10.0.0.0/33") }
        #expect(throws: TrackingConfigurationError.self) { try TrustedProxies(parsing: "example.com") }
    }

    @Test func ipv4TextIsReadStrictly() {
        #expect(IPAddress.parse("0.0.0.0") == [0, 0, 0, 0])
        #expect(IPAddress.parse("255.255.255.255") == [255, 255, 255, 255])
        #expect(IPAddress.parse("10.200.3.40") == [10, 200, 3, 40])
        #expect(IPAddress.parse("::ffff:192.0.2.1") == [192, 0, 2, 1])
        for bad in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.04", "01.2.3.4", "1..3.4", ".1.2.3", "1.2.3.", "1.2.3.4 ",
                    "+1.2.3.4", "1.2.3.1000", "a.b.c.d", "1.2.3.٤", "1.2.3.4\u{0}"] {
            #expect(IPAddress.parse(bad) == nil, "\(bad.debugDescription) is not an IPv4 address")
        }
    }

    @Test func peerAddressesAndTheirNormalForm() {
        let cases: [(peer: String, host: String)] = [
            ("127.0.0.1:5000", "127.0.0.1"), ("[::1]:80", "::1"), ("[::ffff:192.0.2.1]:443", "192.0.2.1"),
            ("[::FFFF:192.0.2.1]:443", "192.0.2.1"), ("::1", "::1"), ("2001:db8::1", "2001:db8::1"),
            ("::ffff:198.51.100.2", "198.51.100.2"), ("198.51.100.2", "198.51.100.2"), ("", ""), ("[::1]", "::1"),
        ]
        for c in cases { #expect(IPAddress.host(ofPeer: c.peer) == c.host, "\(c.peer)") }
        #expect(IPAddress.normalize("[2001:db8::1]") == "2001:db8::1" && IPAddress.normalize("::ffff:1.2.3") == "::ffff:1.2.3")
        #expect(" fb.1.2.x ".trimmingSpaces() == "fb.1.2.x" && "fb.1.2.x".trimmingSpaces() == "fb.1.2.x" && "   ".trimmingSpaces() == "")
    }
}

@Suite struct SlugDistributorTests {
    func bot(_ id: Int64, weight: Int = 1, priority: Int = 0) -> RouteBot {
        RouteBot(botID: id, telegramUsername: "b\(id)", metaPixelID: "", hasConversionsAPIToken: false, metaTestEventCode: "",
                 weight: weight, priority: priority)
    }

    func picks(_ strategy: SlugStrategy, _ bots: [RouteBot], _ n: Int) -> [Int64] {
        let d = SlugDistributor()
        let route = SlugRoute(slug: "s", mode: .redirect, strategy: strategy, candidates: bots)
        return (0..<n).map { _ in d.pick(route)!.botID }
    }

    @Test func strategies() {
        #expect(picks(.roundRobin, [bot(1), bot(2), bot(3)], 6) == [1, 2, 3, 1, 2, 3])
        let w = picks(.weighted, [bot(1, weight: 5), bot(2, weight: 1), bot(3, weight: 1)], 14)
        #expect(w.filter { $0 == 1 }.count == 10 && w.filter { $0 == 2 }.count == 2 && w.filter { $0 == 3 }.count == 2)
        #expect(w.prefix(7).filter { $0 == 1 }.count == 5)  // smooth: interleaved, not 5 in a row then 2
        #expect(picks(.priority, [bot(1, priority: 3), bot(2, priority: 1), bot(3, priority: 1)], 4) == [2, 3, 2, 3])
        #expect(SlugDistributor().pick(SlugRoute(slug: "x", mode: .page, strategy: .roundRobin, candidates: [])) == nil)
    }
}

@Suite struct TrackingDataTests {
    @Test func jsonRoundTripAndDefensiveReading() {
        var d = TrackingData()
        d.token = "0123456789abcdef0123456789abcdef"; d.pageviewEventID = "pageview_x"; d.pageviewTsMs = 1_700_000_000_000
        d.fbp = "fb.1.1.2"; d.fbc = "fb.1.1.x"; d.fbcOrigin = .builtFromFbclid; d.fbclid = "x"; d.utmSource = "ação <b>"
        d.botID = 42; d.userAgent = "UA \"quoted\""
        #expect(TrackingData(json: d.json.bytes) == d)
        let legacy = TrackingData(json: Array(#"{"token":"t","bot_id":"7","pageview_ts":12,"fbc":"fb.1.1.y","extra":[1]}"#.utf8))
        #expect(legacy?.botID == 7 && legacy?.pageviewTsMs == 12 && legacy?.fbcOrigin == .cookie)
        #expect(TrackingData(json: Array("not json".utf8)) == nil && TrackingData(json: Array("[1]".utf8)) == nil)
    }

    @Test func mergeRules() {
        var d = TrackingData()
        d.fbp = "fb.1.1.2"; d.fbc = "fb.1.1.built"; d.fbcOrigin = .builtFromFbclid
        var changed = d.mergeBrowserCookies(fbp: "", fbc: "")
        #expect(!changed)
        changed = d.mergeBrowserCookies(fbp: "garbage", fbc: "also garbage")
        #expect(!changed)
        #expect(d.fbp == "fb.1.1.2" && d.fbc == "fb.1.1.built")
        changed = d.mergeBrowserCookies(fbp: "", fbc: "fb.1.2.cookie")
        #expect(changed)
        #expect(d.fbc == "fb.1.2.cookie" && d.fbcOrigin == .cookie && d.fbp == "fb.1.1.2")
        changed = d.mergeBrowserCookies(fbp: "fb.1.3.4", fbc: "")
        #expect(changed)
        #expect(d.fbp == "fb.1.3.4" && d.fbc == "fb.1.2.cookie")
    }
}

@Suite struct WebPieceTests {
    @Test func formFieldsDecode() {
        let f = FormFields(query: "a=1+2%2B3&b=%FF&c&a=second&d=%zz")
        #expect(f.strict("a") == "1 2+3" && f.strict("b") == nil && f.lossy("b") == "\u{FFFD}")
        #expect(f.has("c") && f.strict("c") == "" && f.lossy("d") == "%zz" && !f.has("e"))
        // Empty fields are skipped, the first `=` splits, an escaped `&` or `=` stays in the value.
        let g = FormFields(query: "&&a==b&=x&k%26=v%26w%3D&&")
        #expect(g.strict("a") == "=b" && g.strict("") == "x" && g.strict("k&") == "v&w=")
        #expect(FormFields(query: "").has("") == false && FormFields(query: nil).has("a") == false)
        // A target's query is read in place, after its first `?` (the path never counts).
        let t = FormFields(target: "/go/a=b?fbclid=x%3Fy&utm_source=fb?x&a")
        #expect(t.strict("fbclid") == "x?y" && t.strict("utm_source") == "fb?x" && t.has("a") && !t.has("/go/a"))
        #expect(!FormFields(target: "/go/s").has("") && !FormFields(target: "/go/s?").has("") && FormFields(target: "/?=1").strict("") == "1")
        let c = FormFields(cookieHeaders: ["_ga=1; _fbp=fb.1.2.3", "_fbc=\"fb.1.2.x\""])
        #expect(c.strict("_fbp") == "fb.1.2.3" && c.strict("_fbc") == "fb.1.2.x")
    }

    @Test func landingPageEscapesEverythingDynamic() {
        let html = LandingPage.pixelPage(destination: "https://t.me/a?start=b\"</script><x>", token: "0123456789abcdef0123456789abcdef",
                                         pixelID: "1", eventID: "pageview_1", pixelScriptURL: "https://p/s.js", timeoutMs: 2500,
                                         nonce: "abc123")
        #expect(!html.contains("<x>") && html.contains("\\u003c/script\\u003e") && html.contains("&lt;/script&gt;"))
        #expect(html.contains("setTimeout(go,2500)") && html.contains("eventID:\"pageview_1\"") && html.contains("<noscript>"))
        #expect(LandingPage.pixelPage(destination: "d", token: "t", pixelID: "", eventID: "e", pixelScriptURL: "s", timeoutMs: 1, nonce: "n")
            .contains("  go();"))
        #expect(html.contains("<script nonce=\"abc123\">"))
    }

    @Test func landingPagePolicyAllowsOnlyOurScriptThePixelAndMeta() {
        let p = LandingPage.pixelPagePolicy(nonce: "n0nce", pixelScriptURL: "https://connect.facebook.net/en_US/fbevents.js")
        #expect(p.hasPrefix("default-src 'none'; script-src 'nonce-n0nce' https://connect.facebook.net;"))
        #expect(p.contains("connect-src 'self' https://connect.facebook.net https://www.facebook.com"))
        #expect(p.contains("frame-ancestors 'none'") && !p.contains("unsafe-eval") && !p.contains("script-src 'unsafe-inline'"))
        #expect(LandingPage.origin(of: "http://127.0.0.1:8080/pixel.js?x=1") == "http://127.0.0.1:8080")
        #expect(LandingPage.origin(of: "javascript:alert(1)") == "'none'" && LandingPage.origin(of: "https://a b/") == "'none'")
        let a = LandingPage.newNonce(), b = LandingPage.newNonce()
        #expect(a.count == 32 && a != b && a.allSatisfy(\.isHexDigit))
    }
}

/// The click's Redis value is written without a dictionary: it must be the very bytes the
/// generic JSON value writes, and read back the same.
@Suite struct TrackingDataBytesTests {
    @Test func directBytesAreTheGenericJSONsBytes() throws {
        var full = TrackingData()
        full.token = "tok_abc"; full.pageviewEventID = "pv-1"; full.pageviewTsMs = 1_764_000_000_123
        full.fbp = "fb.1.1764000000123.42"; full.fbc = "fb.1.1764000000123.IwAR\"x\\y"; full.fbcOrigin = .builtFromFbclid
        full.fbclid = "IwAR_1"; full.utmSource = "face\u{1}book"; full.utmMedium = "cpc\n"; full.utmCampaign = "promoção"
        full.utmContent = "a\u{2028}b"; full.utmTerm = "<t>&"; full.grim = "g"; full.clientIP = "2001:db8::1"
        full.userAgent = "Mozilla/5.0 \"quoted\""; full.eventSourceURL = "https://go.example.com/go/x?a=1&b=2"
        full.slug = "x"; full.botID = -7; full.metaPixelID = "123"
        var sparse = TrackingData()
        sparse.token = "t"; sparse.botID = 1
        var cookie = sparse
        cookie.fbc = "fb.1.2.c"; cookie.fbcOrigin = .cookie
        for data in [full, sparse, cookie, TrackingData()] {
            #expect(data.jsonBytes == data.json.bytes, "\(String(decoding: data.jsonBytes, as: UTF8.self))")
            #expect(TrackingData(json: data.jsonBytes) == data)
        }
    }
}

@Suite struct ControlCharacterTests {
    @Test func c0DelAndC1AreRemovedAndCleanTextIsKept() {
        for clean in ["", "Mozilla/5.0 (X11)", "promoção ¡ÿ €", "\u{A0}\u{100}"] {
            #expect(!clean.hasControlCharacters && clean.withoutControlCharacters() == clean)
        }
        #expect("a\u{0}b\tc\u{1F}".withoutControlCharacters() == "abc")
        #expect("a\u{7F}b".withoutControlCharacters() == "ab")
        #expect("a\u{80}b\u{85}c\u{9F}d".withoutControlCharacters() == "abcd")
        #expect("é\u{9F}".hasControlCharacters && !"é\u{A0}".hasControlCharacters)
    }
}
