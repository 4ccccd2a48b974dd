internal import CCurl

/// One libcurl easy handle: every raw curl call of the module, one line each.
///
/// Invariant: a `CurlEasy` is used by one thread at a time (it lives inside one `execute` call),
/// and every pointer handed to curl (`TransferState`, header list, strings curl copies) outlives
/// `perform()`.
final class CurlEasy {
    let handle: UnsafeMutableRawPointer

    init?() {
        CurlGlobal.ensureInitialized()
        // The corresponding C function is `curl_easy_init`.
        guard let h = curl_easy_init() else { return nil }
        handle = h
    }

    deinit {
        // The corresponding C function is `curl_easy_cleanup`.
        curl_easy_cleanup(handle)
    }

    /// The corresponding C function is `curl_easy_setopt` (long argument).
    @discardableResult func set(_ option: CURLoption, _ value: Int) -> CURLcode {
        pt_curl_setopt_long(handle, option, value)
    }

    /// The corresponding C function is `curl_easy_setopt` (string argument, which curl copies).
    @discardableResult func set(_ option: CURLoption, _ value: String) -> CURLcode {
        pt_curl_setopt_str(handle, option, value)
    }

    /// The corresponding C function is `curl_easy_setopt` (pointer argument).
    @discardableResult func set(_ option: CURLoption, pointer: UnsafeRawPointer?) -> CURLcode {
        pt_curl_setopt_ptr(handle, option, pointer)
    }

    /// The corresponding C function is `curl_easy_setopt` (curl_off_t argument).
    @discardableResult func set(_ option: CURLoption, offset: Int64) -> CURLcode {
        pt_curl_setopt_off(handle, option, curl_off_t(offset))
    }

    /// The corresponding C function is `curl_easy_setopt` (`CURLOPT_WRITEFUNCTION`/`HEADERFUNCTION`).
    @discardableResult func set(_ option: CURLoption, writer: curl_write_callback) -> CURLcode {
        pt_curl_setopt_write_fn(handle, option, writer)
    }

    /// The corresponding C function is `curl_easy_setopt` (`CURLOPT_PREREQFUNCTION`).
    @discardableResult func setPrereq(_ callback: pt_curl_prereq_callback) -> CURLcode {
        pt_curl_setopt_prereq_fn(handle, callback)
    }

    /// The corresponding C function is `curl_easy_perform`.
    func perform() -> CURLcode { curl_easy_perform(handle) }

    /// The corresponding C function is `curl_easy_getinfo` (long result).
    func infoLong(_ info: CURLINFO) -> Int {
        var v = 0
        _ = pt_curl_getinfo_long(handle, info, &v)
        return v
    }

    /// The corresponding C function is `curl_easy_strerror`.
    static func describe(_ code: CURLcode) -> String { String(cString: curl_easy_strerror(code)) }
}

/// A `curl_slist` of request headers, freed in `deinit`.
final class CurlHeaderList {
    private(set) var list: UnsafeMutablePointer<curl_slist>?

    /// The corresponding C function is `curl_slist_append` (which copies the string).
    func append(_ line: String) { list = curl_slist_append(list, line) }

    deinit {
        // The corresponding C function is `curl_slist_free_all`.
        if let list { curl_slist_free_all(list) }
    }
}

/// `curl_global_init` exactly once per process, before the first handle. libcurl 7.84+ makes it
/// thread-safe; the lazy `static let` makes it once.
enum CurlGlobal {
    private static let initialized: Bool = {
        // The corresponding C function is `curl_global_init`.
        curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()

    static func ensureInitialized() { _ = initialized }
}
