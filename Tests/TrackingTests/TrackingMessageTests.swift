import PixTrackMessages
import ProtoCodec
import RPC
import Testing
@testable import Tracking

/// The typed responses of `pixtrack.v1.TrackingService` encode to the bytes the dynamic codec
/// gives for the same fields (the wire format the handlers had before the typed messages), and
/// the method wrapper answers bad input as before.
@Suite struct TrackingMessageTests {
    private func bot(plugin: String = "", credentials: Bool = false) -> Bot {
        Bot(id: 7_012_345_678, telegramUsername: "demo_bot", metaPixelID: "112233", hasConversionsAPIToken: true,
            metaTestEventCode: "", gatewayPlugin: plugin, gatewayBaseURL: "", hasGatewayCredentials: credentials,
            enabled: true, createdAtMs: 1_700_000_000_000, updatedAtMs: 0, notifyURL: "https://n.example/x", hasNotifySecret: false)
    }

    @Test func aBotAlwaysCarriesItsGatewayEvenWhenEmpty() throws {
        for (plugin, credentials) in [("", false), ("sandbox", true)] {
            let typed = try TrackingProto.bot(bot(plugin: plugin, credentials: credentials)).serializedBytes()
            var gateway: [String: ProtoValue] = [:]
            if !plugin.isEmpty { gateway["plugin"] = .string(plugin) }
            if credentials { gateway["has_credentials"] = .bool(true) }
            let reference = ProtoMessage("pixtrack.v1.Bot", [
                "id": .int64(7_012_345_678), "telegram_username": .string("demo_bot"), "meta_pixel_id": .string("112233"),
                "has_conversions_api_token": .bool(true), "gateway": .message(ProtoMessage("pixtrack.v1.GatewayAccount", gateway)),
                "enabled": .bool(true), "created_at_unix_ms": .int64(1_700_000_000_000), "notify_url": .string("https://n.example/x"),
            ])
            #expect(typed == (try ProtoCodec.encode(reference)))
            let decoded = try ProtoCodec.decode(typed, as: "pixtrack.v1.Bot")
            #expect(decoded.message("gateway") != nil)
            #expect(decoded["updated_at_unix_ms"] == nil && decoded["has_notify_secret"] == nil)
        }
    }

    @Test func slugsAndTrackingDataEncodeAsTheDynamicCodecDoes() throws {
        var s = Slug(slug: "demo", mode: .page, strategy: .priority,
                     bots: [SlugBot(botID: 1, weight: 0, priority: -3, enabled: false), SlugBot(botID: 2, weight: 5)])
        s.createdAtMs = 10
        let reference = ProtoMessage("pixtrack.v1.Slug", [
            "slug": .string("demo"), "mode": .enumValue(2), "strategy": .enumValue(3), "enabled": .bool(true),
            "created_at_unix_ms": .int64(10),
            "bots": .list([
                .message(ProtoMessage("pixtrack.v1.SlugBot", ["bot_id": .int64(1), "priority": .int32(-3)])),
                .message(ProtoMessage("pixtrack.v1.SlugBot", ["bot_id": .int64(2), "weight": .uint32(5), "enabled": .bool(true)])),
            ]),
        ])
        #expect(try TrackingProto.slug(s).serializedBytes() == (try ProtoCodec.encode(reference)))

        var d = TrackingData()
        d.token = "0123456789abcdef0123456789abcdef"; d.fbcOrigin = .builtFromFbclid; d.utmTerm = "t"; d.botID = -1
        let data = ProtoMessage("pixtrack.v1.TrackingData", [
            "token": .string(d.token), "fbc_origin": .enumValue(2), "utm_term": .string("t"), "bot_id": .int64(-1),
        ])
        #expect(try TrackingProto.trackingData(d).serializedBytes() == (try ProtoCodec.encode(data)))
        #expect(try TrackingProto.trackingData(TrackingData()).serializedBytes() == [])
    }

    private func call(_ method: RPCMethod, _ bytes: [UInt8]) async throws -> [UInt8] {
        guard case .unary(let handler) = method.kind else { throw RPCError(.internal, "not unary") }
        return try await handler(bytes, RPCContext(path: method.path, metadata: Metadata(), deadline: nil, requestID: "t", peer: "p"))
    }

    @Test func badRequestBytesAreInvalidArgumentNamingTheMessage() async throws {
        let method = TrackingService.unary("GetBot") { (r: Pixtrack_V1_GetBotRequest) -> Pixtrack_V1_Bot in
            var b = Pixtrack_V1_Bot()
            if case .id(let id)? = r.key { b.id = id + 1 }
            return b
        }
        #expect(method.path == "/pixtrack.v1.TrackingService/GetBot")
        for bad: [UInt8] in [[0x0A, 0x05, 0x61], [0x12, 0x02, 0xC3, 0x28]] {
            await #expect {
                _ = try await call(method, bad)
            } throws: { e in
                let e = e as? RPCError
                return e?.code == .invalidArgument && e?.message == "request is not a valid pixtrack.v1.GetBotRequest"
            }
        }
        // A oneof member set to its default is present (id 0 is asked for, not "no key").
        let answer = try await call(method, try ProtoCodec.encode(ProtoMessage("pixtrack.v1.GetBotRequest", ["id": .int64(0)])))
        #expect(try ProtoCodec.decode(answer, as: "pixtrack.v1.Bot").int64("id") == 1)
        #expect(try await call(method, []) == [])
    }
}
