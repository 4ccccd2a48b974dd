import PixTrackMessages

/// Domain values ⇄ `pixtrack.v1` messages. Secrets never appear in anything built here.
/// Fields left at their proto3 default are not sent (the generated encoder omits them).
enum TrackingProto {
    static func trackingData(_ d: TrackingData) -> Pixtrack_V1_TrackingData {
        var m = Pixtrack_V1_TrackingData()
        m.token = d.token; m.pageviewEventId = d.pageviewEventID; m.pageviewTsUnixMs = d.pageviewTsMs
        m.fbp = d.fbp; m.fbc = d.fbc; m.fbcOrigin = Pixtrack_V1_FbcOrigin(rawValue: d.fbcOrigin.protoNumber)
        m.fbclid = d.fbclid
        m.utmSource = d.utmSource; m.utmMedium = d.utmMedium; m.utmCampaign = d.utmCampaign
        m.utmContent = d.utmContent; m.utmTerm = d.utmTerm; m.grim = d.grim
        m.clientIp = d.clientIP; m.userAgent = d.userAgent; m.eventSourceUrl = d.eventSourceURL
        m.slug = d.slug; m.botId = d.botID; m.metaPixelId = d.metaPixelID
        return m
    }

    static func recordResponse(_ r: PageViewResult) -> Pixtrack_V1_RecordPageViewResponse {
        var m = Pixtrack_V1_RecordPageViewResponse()
        let d = r.data
        m.token = d?.token ?? ""; m.pageviewEventId = d?.pageviewEventID ?? ""
        m.redirectUrl = r.redirectURL; m.mode = r.route.mode == .page ? .page : .redirect
        m.botId = r.bot.botID; m.botTelegramUsername = r.bot.telegramUsername
        m.metaPixelId = r.bot.metaPixelID; m.setFbpCookie = r.setFbpCookie; m.crawler = r.crawler
        m.fbp = d?.fbp ?? ""; m.fbc = d?.fbc ?? ""; m.fbcOrigin = Pixtrack_V1_FbcOrigin(rawValue: d?.fbcOrigin.protoNumber ?? 0)
        m.pageviewTsUnixMs = d?.pageviewTsMs ?? 0; m.trackingStored = r.trackingStored
        return m
    }

    static func bot(_ b: Bot) -> Pixtrack_V1_Bot {
        var m = Pixtrack_V1_Bot()
        m.id = b.id; m.telegramUsername = b.telegramUsername; m.metaPixelId = b.metaPixelID
        m.hasConversionsApiToken = b.hasConversionsAPIToken; m.metaTestEventCode = b.metaTestEventCode
        // Always present, even when every field of it is empty.
        var gateway = Pixtrack_V1_GatewayAccount()
        gateway.plugin = b.gatewayPlugin; gateway.baseUrl = b.gatewayBaseURL; gateway.hasCredentials = b.hasGatewayCredentials
        m.gateway = gateway
        m.enabled = b.enabled; m.createdAtUnixMs = b.createdAtMs; m.updatedAtUnixMs = b.updatedAtMs
        m.notifyUrl = b.notifyURL; m.hasNotifySecret = b.hasNotifySecret
        return m
    }

    static func slug(_ s: Slug) -> Pixtrack_V1_Slug {
        var m = Pixtrack_V1_Slug()
        m.slug = s.slug
        m.mode = s.mode == .page ? .page : .redirect
        m.strategy = switch s.strategy {
        case .roundRobin: .roundRobin
        case .weighted: .weighted
        case .priority: .priority
        }
        m.bots = s.bots.map { b in
            var e = Pixtrack_V1_SlugBot()
            e.botId = b.botID; e.weight = UInt32(max(0, b.weight)); e.priority = Int32(clamping: b.priority); e.enabled = b.enabled
            return e
        }
        m.enabled = s.enabled; m.createdAtUnixMs = s.createdAtMs; m.updatedAtUnixMs = s.updatedAtMs
        return m
    }
}
