import ProtoCodec

/// Domain values ⇄ `pixtrack.v1` messages. Secrets never appear in anything built here.
enum TrackingProto {
    /// Drops fields holding their proto3 default (the codec omits them anyway; this keeps
    /// responses minimal and comparisons simple).
    static func nonEmpty(_ fields: [String: ProtoValue]) -> [String: ProtoValue] {
        fields.filter { _, v in
            switch v {
            case .string(let s): !s.isEmpty
            case .int64(let i): i != 0
            case .int32(let i): i != 0
            case .uint32(let i): i != 0
            case .enumValue(let e): e != 0
            case .bool(let b): b
            case .list(let l): !l.isEmpty
            default: true
            }
        }
    }

    static func trackingData(_ d: TrackingData) -> ProtoMessage {
        ProtoMessage("pixtrack.v1.TrackingData", nonEmpty([
            "token": .string(d.token), "pageview_event_id": .string(d.pageviewEventID),
            "pageview_ts_unix_ms": .int64(d.pageviewTsMs), "fbp": .string(d.fbp), "fbc": .string(d.fbc),
            "fbc_origin": .enumValue(d.fbcOrigin.protoNumber), "fbclid": .string(d.fbclid),
            "utm_source": .string(d.utmSource), "utm_medium": .string(d.utmMedium), "utm_campaign": .string(d.utmCampaign),
            "utm_content": .string(d.utmContent), "utm_term": .string(d.utmTerm), "grim": .string(d.grim),
            "client_ip": .string(d.clientIP), "user_agent": .string(d.userAgent), "event_source_url": .string(d.eventSourceURL),
            "slug": .string(d.slug), "bot_id": .int64(d.botID), "meta_pixel_id": .string(d.metaPixelID),
        ]))
    }

    static func recordResponse(_ r: PageViewResult) -> ProtoMessage {
        let d = r.data
        return ProtoMessage("pixtrack.v1.RecordPageViewResponse", nonEmpty([
            "token": .string(d?.token ?? ""), "pageview_event_id": .string(d?.pageviewEventID ?? ""),
            "redirect_url": .string(r.redirectURL), "mode": .enumValue(r.route.mode == .page ? 2 : 1),
            "bot_id": .int64(r.bot.botID), "bot_telegram_username": .string(r.bot.telegramUsername),
            "meta_pixel_id": .string(r.bot.metaPixelID), "set_fbp_cookie": .string(r.setFbpCookie), "crawler": .bool(r.crawler),
            "fbp": .string(d?.fbp ?? ""), "fbc": .string(d?.fbc ?? ""), "fbc_origin": .enumValue(d?.fbcOrigin.protoNumber ?? 0),
            "pageview_ts_unix_ms": .int64(d?.pageviewTsMs ?? 0), "tracking_stored": .bool(r.trackingStored),
        ]))
    }

    static func bot(_ b: Bot) -> ProtoMessage {
        ProtoMessage("pixtrack.v1.Bot", nonEmpty([
            "id": .int64(b.id), "telegram_username": .string(b.telegramUsername), "meta_pixel_id": .string(b.metaPixelID),
            "has_conversions_api_token": .bool(b.hasConversionsAPIToken), "meta_test_event_code": .string(b.metaTestEventCode),
            "gateway": .message(ProtoMessage("pixtrack.v1.GatewayAccount", nonEmpty([
                "plugin": .string(b.gatewayPlugin), "base_url": .string(b.gatewayBaseURL), "has_credentials": .bool(b.hasGatewayCredentials),
            ]))),
            "enabled": .bool(b.enabled), "created_at_unix_ms": .int64(b.createdAtMs), "updated_at_unix_ms": .int64(b.updatedAtMs),
            "notify_url": .string(b.notifyURL), "has_notify_secret": .bool(b.hasNotifySecret),
        ]))
    }

    static func slug(_ s: Slug) -> ProtoMessage {
        let mode: Int32 = s.mode == .page ? 2 : 1
        let strategy: Int32 = switch s.strategy {
        case .roundRobin: 1
        case .weighted: 2
        case .priority: 3
        }
        return ProtoMessage("pixtrack.v1.Slug", nonEmpty([
            "slug": .string(s.slug), "mode": .enumValue(mode), "strategy": .enumValue(strategy),
            "bots": .list(s.bots.map { b in
                .message(ProtoMessage("pixtrack.v1.SlugBot", nonEmpty([
                    "bot_id": .int64(b.botID), "weight": .uint32(UInt32(max(0, b.weight))),
                    "priority": .int32(Int32(clamping: b.priority)), "enabled": .bool(b.enabled),
                ])))
            }),
            "enabled": .bool(s.enabled), "created_at_unix_ms": .int64(s.createdAtMs), "updated_at_unix_ms": .int64(s.updatedAtMs),
        ]))
    }
}
