/*
 * pixtrack_gateway.h — the whole contract between PixTrack and a PIX gateway plugin.
 *
 * A plugin is a shared library (.so) that exports one symbol, PT_GATEWAY_ENTRY_SYMBOL. It never
 * links against the host: everything it may call on the host is in the pt_host_api table the
 * host passes in, and everything the host calls is in the pt_gateway_plugin table the plugin
 * returns. A plugin in plain C needs this header, protobuf-c and the generated code for
 * Proto/pixtrack/v1/gateway.proto, nothing else (see Plugins/README.md).
 *
 * VERSIONING
 *   Both tables start with struct_size, abi_major, abi_minor. Members are only ever appended;
 *   a new minor may add members at the end, a new major may change anything. The host refuses a
 *   plugin whose abi_major differs from PT_GATEWAY_ABI_MAJOR, whose abi_minor is newer than the
 *   host's, or whose struct_size is smaller than the size of the table at its declared minor.
 *   A plugin must likewise check the host table's abi_major and struct_size before using a member
 *   that a later minor added.
 *
 * DATA
 *   Requests and results are protobuf-c encoded bytes of the messages in
 *   Proto/pixtrack/v1/gateway.proto (named at each function). Unknown fields are ignored both ways,
 *   so that file may grow without breaking anybody.
 *
 * OWNERSHIP
 *   - Buffers passed IN (config, request, webhook bytes, error buffers) belong to the caller and
 *     are valid only during the call. Copy what you keep.
 *   - A buffer a plugin function RETURNS through out_result is allocated by the plugin and freed
 *     by the host with that plugin's free_buffer, exactly once, from any thread. The host sets
 *     *out_result = NULL and *out_result_len = 0 before each call. A buffer written there is
 *     freed whatever the status: on an error return, or when it is larger than
 *     PT_MAX_RESULT_BYTES, the host frees it unread. So never write a pointer there that
 *     free_buffer cannot take, and never free it yourself after writing it.
 *   - A buffer the host RETURNS through http_request's out_response is freed by the plugin with
 *     the host's free_buffer, exactly once (it is written only when http_request returns PT_OK).
 *   - name, version and description point at static strings that live as long as the process.
 *   - Both tables must stay valid and unchanged for the life of the process: plugins are never
 *     unloaded (the host opens them RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE and never dlcloses).
 *
 * ERRORS
 *   Every fallible function returns an int32_t status: PT_OK or one of PT_ERR_*. On failure the
 *   plugin may write a NUL-terminated, human-readable message (no secrets) into error, which has
 *   room for error_capacity bytes (512 today; always >= 1, the host NUL-terminates the last byte
 *   and redacts the instance's credentials); the host ignores out_result then. Nothing may
 *   unwind across this boundary: no C++ exceptions, no longjmp out of a call, no Swift traps left
 *   to propagate. A plugin that crashes takes its process down (see RUNNER), so parse defensively.
 *
 * STRINGS
 *   Every string field of a result (ids, pix_code, message, raw_status, ...) is a proto3 string:
 *   it must be valid UTF-8 without NUL. A result with invalid UTF-8 does not decode and counts as
 *   garbage (see RESULTS). Gateway bytes you copy into a result must be checked first (or
 *   refused): that is the plugin's job, the host does not repair them. Ids (transaction_id,
 *   gateway_hash, reference, event_id) are at most 256 bytes: a result with a longer one is
 *   refused whole as garbage, never cut (a cut id names another charge, or none). message and
 *   raw_status are cut to 4096 and 256 bytes for logs. Never truncate an id yourself: refuse the
 *   input or report the failure instead.
 *
 * THREADING
 *   The host calls create_pix, get_status and parse_webhook concurrently, from several threads,
 *   on the same instance: instances must be thread-safe, and so must everything they share (no
 *   strtok, no static buffers, no unlocked caches; prefer strtok_r, locals and immutable
 *   instances). create and destroy are never concurrent with calls on the same instance; destroy
 *   runs only after every call on that instance has returned. Calls are blocking and run on host
 *   threads reserved for plugins (one per call in flight, at most PIXTRACK_PLUGIN_MAX_IN_FLIGHT,
 *   64, per plugin; beyond it calls fail fast as busy), never on an event loop. Each such thread
 *   has an 8 MiB stack, whatever `ulimit -s` says: deep recursion on gateway data (a JSON parser
 *   without a depth limit) will overflow it. Host functions may be called from any thread.
 *
 * TIME
 *   Every call runs under a host deadline (PIXTRACK_PLUGIN_TIMEOUT_MS, 5 s by default), create()
 *   included. A call still running at its deadline is abandoned: for create_pix the outcome
 *   becomes UNKNOWN (the payment waits for the reconciler), its late result is freed and
 *   discarded, and any http_request it makes after the deadline is refused without being sent
 *   (HTTP_ERROR_DEADLINE). A create() that fails or overruns creates no instance: the call that
 *   needed it fails (FAILED_PRECONDITION) and the next one tries create() again.
 *   host->remaining_ms(call) tells the time left (0 once passed); remaining_ms(NULL) is INT64_MAX.
 *   The host already caps each http_request's timeouts by it. In a runner (see RUNNER) a call
 *   still inside the plugin well past its deadline (the call's timeout again, 1 to 10 s) gets its
 *   process killed and restarted.
 *
 * OUTCOMES (create_pix)
 *   The host decides the final outcome from what the plugin returns and what it saw:
 *   - PT_OK with a CreatePixResult: the plugin's outcome, checked. CREATED needs a transaction id
 *     and a pix code whose BR Code CRC-16 is valid (and whose amount, when present, is the one
 *     requested), else UNKNOWN. NOT_SENT is believed only if no request the host performed for
 *     this call was sent (requests flagged HttpRequest.no_side_effects, such as token fetches,
 *     do not count), else UNKNOWN. DECLINED and UNKNOWN are taken as given.
 *   - Another status (PT_ERR_*): NOT_SENT when no request was sent during the call, else UNKNOWN.
 *     So return an error status only for failures that happened before or without the gateway.
 *   - PT_OK with garbage (see RESULTS), or no answer before the deadline: UNKNOWN.
 *   A plugin that is unsure whether the gateway created the charge must say UNKNOWN, never
 *   DECLINED or NOT_SENT: UNKNOWN leaves the payment for the reconciler, the others fail it.
 *
 * RESULTS (all three calls)
 *   - PT_OK with a NULL *out_result (whatever the length), more than PT_MAX_RESULT_BYTES, bytes
 *     that do not decode as the call's result message, or an id over 256 bytes: garbage. The
 *     call fails as invalid_result: create_pix is UNKNOWN; get_status changes nothing and is asked
 *     again later; parse_webhook's body is kept and retried (then parked after the configured
 *     attempts), never answered 400.
 *   - PT_OK with a non-NULL buffer of 0 bytes: a valid, empty message (protobuf-c packs an
 *     all-default message to 0 bytes; allocate at least 1 byte so the pointer is not NULL). An
 *     empty CreatePixResult is UNKNOWN; an empty StatusResult is GATEWAY_STATUS_UNKNOWN (the host
 *     changes nothing); an empty WebhookResult names no charge, so the webhook is rejected (400).
 *
 * IDS
 *   A gateway may know a charge by two ids. CreatePixResult.transaction_id is its primary id
 *   (the one its dashboard shows and its create answer always carries; e.g. ÁtomoPay's numeric
 *   `id`); gateway_hash is the second one when there is one (ÁtomoPay's `hash`), else empty. A
 *   gateway with one id puts it in transaction_id. The host stores both and passes both back in
 *   GetStatusRequest (use whichever the gateway's status API takes). StatusResult and
 *   WebhookResult carry the same two fields with the same meaning: never put one kind of id in
 *   the other's field. Fill WebhookResult.reference (our
 *   "PAY-{id}") and StatusResult.reference whenever the gateway's body carries it: the host
 *   matches a webhook by transaction_id, then gateway_hash, then reference, and before it binds
 *   an id a webhook suggested it checks that the status answer's reference (if any) and amount
 *   are the payment's. WebhookResult.gateway_hash and StatusResult.reference/gateway_hash were
 *   appended to gateway.proto without touching a table, so PT_GATEWAY_ABI_MINOR stays 0: an older
 *   plugin leaves them empty (matching falls back to the other ids) and an older host ignores them.
 *
 * WEBHOOKS
 *   What parse_webhook sees (ParseWebhookRequest): the body exactly as received (bytes, not
 *   decoded: no charset conversion, no Content-Encoding undone; HTTP/1.1 chunked framing removed),
 *   up to the server's request limit (--max-message-bytes, 4 MiB by default; it may be empty or
 *   anything at all: invalid UTF-8, binary, `null`, nesting thousands deep); and only these
 *   headers, names in lower case, values as received, repeated names kept in order:
 *   content-type, user-agent, event, x-event, x-event-type, x-webhook-event, x-webhook-id,
 *   x-request-id, x-signature, idempotency-key. It never sees the URL, path or query (the path
 *   holds the webhook secret), nor the sender's address. The same stored body and headers are
 *   parsed again on each retry, so parsing must be pure and deterministic.
 *   parse_webhook may not make HTTP requests: its http_request returns PT_OK with an HttpResponse
 *   that has sent = false and error = HTTP_ERROR_INVALID_REQUEST, and nothing leaves the host.
 *   Its answers:
 *   - PT_ERR_INVALID_ARGUMENT, with a short reason in error, for a body that can never be read
 *     (not the gateway's format, names no charge, a field that is not valid UTF-8): the host
 *     stores it, marks it rejected and answers the gateway 400 with that reason.
 *   - PT_OK with at least one of transaction_id, gateway_hash, reference: a hint. A status word
 *     the plugin does not know is GATEWAY_STATUS_UNKNOWN (never PAID on a guess): the host still
 *     asks the status API, and acts only on its answer. Refund and chargeback markers in a body
 *     win over a "paid" status next to them. PT_OK naming no charge is rejected like
 *     PT_ERR_INVALID_ARGUMENT.
 *   - Any other status (or garbage, a crash, the deadline): the host's problem, not the body's:
 *     the gateway gets 200, the stored body is retried with back-off and parked after the
 *     configured attempts.
 *
 * RUNNER
 *   By default each plugin file runs in its own process, pixtrack-plugin-runner, started and
 *   supervised by pixtrackd (PIXTRACK_PLUGIN_ISOLATION=in-process, or PIXTRACK_PLUGIN_IN_PROCESS
 *   for named plugins, loads it into pixtrackd instead). The ABI is the same in both; what the
 *   process means for a plugin:
 *   - Global state (a token cache, a static table) is shared by every instance of the plugin in
 *     that runner, and lost when it crashes or is killed: instances are then created again from
 *     their config on their next call. Never rely on it surviving; never share it with another
 *     plugin (each plugin file has its own runner).
 *   - A crash (SIGSEGV, abort, exit, the memory limit) ends only the runner: the calls it held
 *     fail (create_pix UNKNOWN), it restarts with back-off, and 3 crashes in a row mark the plugin
 *     unhealthy. Crash signals have their default action: do not install handlers for SIGSEGV,
 *     SIGBUS, SIGILL, SIGFPE, SIGABRT or SIGTRAP (a handler that returns re-runs the fault).
 *     SIGPIPE is ignored. Do not raise, block or wait for signals, nor fork or exec: the host
 *     never signals a runner except to kill it (SIGKILL).
 *   - Address space is limited (RLIMIT_AS, PIXTRACK_PLUGIN_MEMORY_LIMIT_MB, 2048 MiB by default):
 *     malloc returns NULL past it; check it (an unchecked NULL is a crash). Threads' stacks count
 *     (8 MiB each); malloc keeps at most 2 arenas, so the limit goes to data, not reservations.
 *   - Descriptors: stdin is /dev/null; stdout and stderr are pixtrackd's (but write logs with
 *     host->log, which attributes and redacts them); every other inherited descriptor is closed.
 *     All gateway I/O goes through http_request, performed by pixtrackd.
 *   - System calls: a seccomp filter refuses, with EPERM, sockets other than AF_UNIX (no network
 *     of the plugin's own), execve/execveat, ptrace and other processes' memory, kernel modules,
 *     bpf, kexec, namespaces and mounts, perf events, keyrings, userfaultfd, setting the clock,
 *     reboot and swap. Everything else (memory, threads, files, clocks) is allowed. In-process
 *     plugins have no filter, but the same rules hold for them.
 *   - Environment: empty but PATH=/usr/bin:/bin (no database URL, no tokens). Configuration
 *     reaches a plugin only through create()'s PluginConfig. The process sets NO_NEW_PRIVS, is
 *     not dumpable and writes no core file; it exits when pixtrackd does.
 *   - now_unix_ms, monotonic_ms and remaining_ms are answered in the runner (same clocks);
 *     http_request and log go to pixtrackd over a socket (one request at a time per call).
 */
#ifndef PIXTRACK_GATEWAY_H
#define PIXTRACK_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PT_GATEWAY_ABI_MAJOR 1
#define PT_GATEWAY_ABI_MINOR 0

/* The one symbol a plugin exports, of type pt_gateway_entry_fn. */
#define PT_GATEWAY_ENTRY_SYMBOL "pixtrack_gateway_entry"

/* Status codes returned by plugin and host functions. */
#define PT_OK 0
/* Input bytes that do not decode, or fields that make no sense (e.g. amount <= 0). */
#define PT_ERR_INVALID_ARGUMENT 1
/* create(): the configuration is unusable (missing credential, bad base URL, ...). */
#define PT_ERR_CONFIG 2
/* The gateway offers no way to do this (e.g. get_status by reference only). */
#define PT_ERR_UNSUPPORTED 3
/* The gateway answered something the plugin cannot use (HTML page, missing fields, ...). */
#define PT_ERR_GATEWAY 4
/* No answer from the gateway (timeout, connection reset, 5xx with no usable body). */
#define PT_ERR_UNAVAILABLE 5
/* The call's host deadline passed. */
#define PT_ERR_DEADLINE 6
/* Anything else (allocation failure, bug). */
#define PT_ERR_INTERNAL 7

/* Log levels for pt_host_api.log. */
#define PT_LOG_DEBUG 0
#define PT_LOG_INFO 1
#define PT_LOG_WARNING 2
#define PT_LOG_ERROR 3

/* Capability bits for pt_gateway_plugin.capabilities. */
/* get_status accepts a GetStatusRequest with only `reference` set (finds lost charges). */
#define PT_CAP_STATUS_BY_REFERENCE (UINT64_C(1) << 0)
/* parse_webhook understands this gateway's webhooks. */
#define PT_CAP_WEBHOOKS (UINT64_C(1) << 1)

/* Largest buffer the host accepts from a plugin; a larger result counts as garbage (UNKNOWN). */
#define PT_MAX_RESULT_BYTES ((size_t)1 << 20)

/* Opaque, defined by the plugin: one configured gateway account. */
typedef struct pt_instance pt_instance;

/* Opaque, defined by the host: one plugin call in progress. Valid only until that call returns;
 * pass it to the host functions made on behalf of that call. Never store it. */
typedef struct pt_call pt_call;

/* ---------------------------------------------------------------------------------------------
 * The host's table, passed to the entry function and to create(). Valid for the process lifetime.
 * ------------------------------------------------------------------------------------------- */
typedef struct pt_host_api {
    uint32_t struct_size; /* sizeof(pt_host_api) as the host was compiled */
    uint16_t abi_major;   /* PT_GATEWAY_ABI_MAJOR of the host */
    uint16_t abi_minor;   /* PT_GATEWAY_ABI_MINOR of the host */

    /* Performs one HTTP request for `call`: request is an encoded pixtrack.v1.HttpRequest, the
     * answer an encoded pixtrack.v1.HttpResponse written to *out_response (free it with
     * free_buffer). Blocks until the answer, an error or the timeout. Returns PT_OK whenever
     * *out_response was written — including failed transfers: HttpResponse.error and .sent tell
     * what happened, and sent == false guarantees the gateway never saw the request. Returns
     * PT_ERR_INVALID_ARGUMENT (nothing sent, nothing written) when `call` is NULL or the request
     * does not decode. The host applies its timeouts (capped by the call's deadline), a response
     * size limit, no redirects, http/https only, and logs the URL with secrets redacted. */
    int32_t (*http_request)(pt_call *call, const uint8_t *request, size_t request_len,
                            uint8_t **out_response, size_t *out_response_len);

    /* Frees a buffer the host returned. NULL is ignored. */
    void (*free_buffer)(uint8_t *buffer, size_t len);

    /* Writes one log line attributed to the plugin (and to the call's instance when `call` is
     * not NULL). The host redacts the credentials it gave the instance, but do not log secrets.
     * `message` is a NUL-terminated UTF-8 string, copied before returning. */
    void (*log)(pt_call *call, int32_t level, const char *message);

    /* Wall clock, Unix epoch milliseconds (UTC). */
    int64_t (*now_unix_ms)(void);

    /* A monotonic clock in milliseconds (arbitrary origin), for measuring durations. */
    int64_t (*monotonic_ms)(void);

    /* Milliseconds left before `call`'s deadline (0 when passed; INT64_MAX when none and for a
     * NULL call). */
    int64_t (*remaining_ms)(pt_call *call);
} pt_host_api;

/* ---------------------------------------------------------------------------------------------
 * The plugin's table, returned by the entry function. Must stay valid for the process lifetime
 * (a static or a never-freed allocation). Every function member is required unless marked
 * optional; the host refuses a plugin with a NULL required member.
 * ------------------------------------------------------------------------------------------- */
typedef struct pt_gateway_plugin {
    uint32_t struct_size; /* sizeof(pt_gateway_plugin) as the plugin was compiled */
    uint16_t abi_major;   /* PT_GATEWAY_ABI_MAJOR the plugin was compiled against */
    uint16_t abi_minor;   /* PT_GATEWAY_ABI_MINOR the plugin was compiled against */

    /* Gateway name: 1-32 chars of [a-z0-9_-], unique among loaded plugins (e.g. "atomopay"). It is
     * the {gateway} segment of webhook URLs and the name gateway accounts refer to. Required. */
    const char *name;
    /* The plugin's own version, e.g. "1.2.0". Required. */
    const char *version;
    /* One line for operators. Optional (NULL). */
    const char *description;
    /* PT_CAP_* bits. */
    uint64_t capabilities;

    /* Creates an instance for one gateway account. config is an encoded pixtrack.v1.PluginConfig:
     * credentials reach the plugin here and only here. `self` is this table, `host` the host
     * table. On PT_OK, *out_instance is the plugin's handle (non-NULL), passed back to every call
     * and to destroy; on an error the host ignores it (free what you allocated). Runs under the
     * call deadline (TIME). May perform http_request through `call` (e.g. to verify credentials).
     * On an error the call that needed the instance fails (FAILED_PRECONDITION; the message is
     * logged, redacted) and a later one calls create again. */
    int32_t (*create)(const struct pt_gateway_plugin *self, const pt_host_api *host, pt_call *call,
                      const uint8_t *config, size_t config_len, pt_instance **out_instance,
                      char *error, size_t error_capacity);

    /* Releases an instance. Called once, after every call on it has returned. */
    void (*destroy)(pt_instance *instance);

    /* Issues a PIX charge. request: pixtrack.v1.CreatePixRequest; result:
     * pixtrack.v1.CreatePixResult. The reference ("PAY-{id}") must be sent to the gateway wherever
     * it stores one: it is the only handle on a charge whose answer was lost. See OUTCOMES. */
    int32_t (*create_pix)(pt_instance *instance, pt_call *call,
                          const uint8_t *request, size_t request_len,
                          uint8_t **out_result, size_t *out_result_len,
                          char *error, size_t error_capacity);

    /* Asks the gateway for a charge's status. request: pixtrack.v1.GetStatusRequest (by
     * transaction id, or by reference only with PT_CAP_STATUS_BY_REFERENCE); result:
     * pixtrack.v1.StatusResult. Map every gateway status; an unknown one is
     * GATEWAY_STATUS_UNKNOWN, never PAID. A gateway that says "no such charge" is NOT_FOUND. */
    int32_t (*get_status)(pt_instance *instance, pt_call *call,
                          const uint8_t *request, size_t request_len,
                          uint8_t **out_result, size_t *out_result_len,
                          char *error, size_t error_capacity);

    /* Reads a webhook the gateway posted. request: pixtrack.v1.ParseWebhookRequest (headers and
     * raw body, see WEBHOOKS); result: pixtrack.v1.WebhookResult. Pure parsing: http_request is
     * refused unsent here. The host treats the result as a hint and confirms with get_status
     * before acting on it. */
    int32_t (*parse_webhook)(pt_instance *instance, pt_call *call,
                             const uint8_t *request, size_t request_len,
                             uint8_t **out_result, size_t *out_result_len,
                             char *error, size_t error_capacity);

    /* Frees a buffer this plugin returned through out_result. NULL is ignored. Any thread. */
    void (*free_buffer)(uint8_t *buffer, size_t len);
} pt_gateway_plugin;

/* The size of pt_gateway_plugin at minor 0: the smallest struct_size the host accepts. */
#define PT_GATEWAY_PLUGIN_SIZE_V1_0 (offsetof(pt_gateway_plugin, free_buffer) + sizeof(void (*)(void)))
/* The size of pt_host_api at minor 0. */
#define PT_HOST_API_SIZE_V1_0 (offsetof(pt_host_api, remaining_ms) + sizeof(void (*)(void)))

/* The entry point. Called once per loaded file, before anything else, on any thread. Returns the
 * plugin's table, or NULL to refuse the host (e.g. host->abi_major is not the one it knows).
 * `host` stays valid for the process lifetime and may be kept. Must not block or do I/O. */
typedef const pt_gateway_plugin *(*pt_gateway_entry_fn)(const pt_host_api *host);

#ifdef __cplusplus
}
#endif
#endif /* PIXTRACK_GATEWAY_H */
