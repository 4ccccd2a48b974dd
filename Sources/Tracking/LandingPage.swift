import RPC
import JSONKit

/// The small HTML pages `/go/{slug}` answers with. Every dynamic value is either validated
/// (bot usernames, tokens, pixel ids) or escaped for where it lands (HTML text, JS string).
enum LandingPage {
    /// Page mode (DESIGN §1): the Meta pixel fires PageView with the server's event id, a
    /// beacon posts the browser's `_fbp`/`_fbc` back, then the visitor goes to Telegram: when the
    /// pixel script has loaded (plus a moment to send), at once when it fails, and in any case
    /// after `timeoutMs`; `<noscript>` visitors get a meta refresh.
    static func pixelPage(destination: String, token: String, pixelID: String, eventID: String,
                          pixelScriptURL: String, timeoutMs: Int, nonce: String) -> String {
        let dest = js(destination)
        let pixel = pixelID.isEmpty ? "" : """
              !function(f,b,e,v,n,t,s){if(f.fbq)return;n=f.fbq=function(){n.callMethod?n.callMethod.apply(n,arguments):n.queue.push(arguments)};
              if(!f._fbq)f._fbq=n;n.push=n;n.loaded=!0;n.version='2.0';n.queue=[];t=b.createElement(e);t.async=!0;t.src=v;
              t.onload=function(){setTimeout(go,600)};t.onerror=go;
              s=b.getElementsByTagName(e)[0];s.parentNode.insertBefore(t,s)}(window,document,'script',\(js(pixelScriptURL)));
              fbq('init',\(js(pixelID)));
              fbq('track','PageView',{},{eventID:\(js(eventID))});
            """
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width,initial-scale=1">
            <meta name="robots" content="noindex">
            <title>Opening Telegram…</title>
            <noscript><meta http-equiv="refresh" content="0;url=\(html(destination))"></noscript>
            <script nonce="\(nonce)">
            (function(){
              var dest=\(dest),beacon=\(js("/t/" + token + "/cookies")),done=false;
              function cookie(n){var m=document.cookie.match(new RegExp('(?:^|; )'+n+'=([^;]*)'));return m?decodeURIComponent(m[1]):''}
              function go(){if(done)return;done=true;
                try{var b=new URLSearchParams();b.set('fbp',cookie('_fbp'));b.set('fbc',cookie('_fbc'));
                  if(navigator.sendBeacon)navigator.sendBeacon(beacon,b)}catch(e){}
                window.location.replace(dest)}
              window.__pixtrackGo=go;
              setTimeout(go,\(max(0, timeoutMs)));
            \(pixel.isEmpty ? "  go();" : pixel)
            })();
            </script>
            </head><body style="font-family:sans-serif;text-align:center;margin-top:20vh">
            <p>Opening Telegram…</p>
            <p><a href="\(html(destination))">Continue to Telegram</a></p>
            </body></html>
            """
    }

    /// The page's Content-Security-Policy: our one inline script (by nonce) and the pixel's own
    /// origin may run; the pixel may send to Meta; the beacon goes to us; nothing may frame it.
    static func pixelPagePolicy(nonce: String, pixelScriptURL: String) -> String {
        let pixel = origin(of: pixelScriptURL)
        let meta = "https://www.facebook.com"
        return "default-src 'none'; script-src 'nonce-\(nonce)' \(pixel); img-src \(pixel) \(meta); "
            + "connect-src 'self' \(pixel) \(meta); style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }

    /// The message pages run no script at all.
    static let messagePagePolicy = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// `scheme://host[:port]` of an http(s) URL (the pixel script's), or `'none'`.
    static func origin(of url: String) -> String {
        let scheme: String
        if url.hasPrefix("https://") { scheme = "https://" } else if url.hasPrefix("http://") { scheme = "http://" } else { return "'none'" }
        let host = url.dropFirst(scheme.count).prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !host.isEmpty, host.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != ";" && $0 != "'" }) else { return "'none'" }
        return scheme + host
    }

    /// A fresh CSP nonce: 128 random bits, hex.
    static func newNonce() -> String {
        var g = SecureRandom()
        let hex = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(32)
        for _ in 0..<2 {
            var v = g.next()
            for _ in 0..<16 { out.append(hex[Int(v & 0xF)]); v >>= 4 }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func notFound() -> String {
        message(title: "Link not found", text: "This link does not exist or is no longer active.")
    }

    static func noBot() -> String {
        message(title: "Temporarily unavailable", text: "This link has no bot available right now. Please try again later.")
    }

    static func unavailable() -> String {
        message(title: "Temporarily unavailable", text: "We could not open this link right now. Please try again in a moment.")
    }

    private static func message(title: String, text: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
        <meta name="robots" content="noindex"><title>\(html(title))</title></head>
        <body style="font-family:sans-serif;text-align:center;margin-top:20vh"><h1>\(html(title))</h1><p>\(html(text))</p></body></html>
        """
    }

    /// A JS string literal safe inside `<script>` (JSON escaping plus `<`, `>`, `&`).
    static func js(_ s: String) -> String { JSON.string(s).scriptSafeSerialized }

    static func html(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
