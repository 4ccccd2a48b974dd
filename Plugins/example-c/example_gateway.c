/*
 * example_gateway.c — a complete PixTrack gateway plugin in plain C (see Plugins/README.md).
 *
 * Build (from the repository root; needs only a C compiler and libprotobuf-c):
 *
 *   cc -shared -fPIC -O2 -Wall -Wextra -Werror \
 *      -I Sources/GatewayABI/include -I Sources/PixTrackProto/include \
 *      -o libexample_c.so Plugins/example-c/example_gateway.c \
 *      Sources/PixTrackProto/pixtrack/v1/gateway.pb-c.c -lprotobuf-c
 *
 * The gateway it talks to is imaginary and minimal, to keep the example about the ABI:
 *   - without a base URL it works offline: every charge is CREATED with a locally built BR Code;
 *   - with `base_url` set, create_pix POSTs `{"reference": "...", "amount_cents": N}` to
 *     {base_url}/charges through the host and expects `201` with the pix code as the plain-text
 *     body (transaction id in the `X-Charge-Id` header); get_status GETs
 *     {base_url}/charges/{id} and expects the status word as plain text.
 * Webhooks are `status=paid&id=...` form bodies.
 *
 * Rules it follows (pixtrack_gateway.h): calls run concurrently, so nothing is shared but the
 * immutable instance and the host table (no strtok, no static buffers); every string it returns
 * is printable ASCII, hence valid UTF-8; an id that does not fit is refused or reported, never
 * cut; every error path frees what it allocated.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pixtrack_gateway.h"
#include "pixtrack/v1/gateway.pb-c.h"

typedef Pixtrack__V1__CreatePixRequest CreateReq;
typedef Pixtrack__V1__CreatePixResult CreateRes;

/* One gateway account. Immutable after create, so concurrent calls need no lock. */
struct pt_instance {
    char base_url[512];   /* empty: offline */
    char api_key[256];
};

static const pt_host_api *g_host; /* set once by the entry point, before any call; read-only after */

static void set_error(char *error, size_t capacity, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, capacity, fmt, ap);
    va_end(ap);
}

/* CRC-16/CCITT-FALSE over `len` bytes: poly 0x1021, init 0xFFFF. */
static unsigned crc16(const char *s, size_t len) {
    unsigned crc = 0xFFFF;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (int b = 0; b < 8; b++) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xFFFF : (crc << 1) & 0xFFFF;
    }
    return crc;
}

/* 1 when s is 1..max-1 bytes of printable ASCII (valid UTF-8). `strict` (ids): no space either,
 * nor the characters that would change a URL path or a JSON string. */
static int printable(const char *s, size_t len, size_t max, int strict) {
    if (len == 0 || len >= max) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7E || (strict && (c == ' ' || c == '"' || c == '\\' || c == '/' || c == '?' || c == '#' || c == '%')))
            return 0;
    }
    return 1;
}

/* Replaces every byte that is not printable ASCII: a message cut by snprintf or quoting the
 * gateway stays valid UTF-8. */
static void ascii_only(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7E) *s = '?';
}

static size_t tlv(char *out, size_t at, size_t cap, const char *id, const char *value) {
    int n = snprintf(out + at, cap - at, "%s%02zu%s", id, strlen(value), value);
    return n < 0 ? at : at + (size_t)n;
}

/* A BR Code "copia e cola" with the amount and a correct CRC (txid "***": none). */
static void build_br_code(char *out, size_t cap, long long cents) {
    char account[128], amount[32], additional[64];
    size_t n = tlv(account, 0, sizeof account, "00", "br.gov.bcb.pix");
    tlv(account, n, sizeof account, "01", "example@pixtrack.invalid");
    snprintf(amount, sizeof amount, "%lld.%02lld", cents / 100, cents % 100);
    tlv(additional, 0, sizeof additional, "05", "***");
    size_t at = tlv(out, 0, cap, "00", "01");
    at = tlv(out, at, cap, "26", account);
    at = tlv(out, at, cap, "52", "0000");
    at = tlv(out, at, cap, "53", "986");
    at = tlv(out, at, cap, "54", amount);
    at = tlv(out, at, cap, "58", "BR");
    at = tlv(out, at, cap, "59", "EXAMPLE C GATEWAY");
    at = tlv(out, at, cap, "60", "SAO PAULO");
    at = tlv(out, at, cap, "62", additional);
    snprintf(out + at, cap - at, "6304");
    snprintf(out + at + 4, cap - at - 4, "%04X", crc16(out, at + 4));
}

/* Packs any protobuf-c message into a malloc'd buffer the host frees with free_buffer. */
static int32_t pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len) {
    size_t size = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return PT_ERR_INTERNAL;
    *out_len = protobuf_c_message_pack(msg, buf);
    *out = buf;
    return PT_OK;
}

static int32_t ex_create(const pt_gateway_plugin *self, const pt_host_api *host, pt_call *call,
                         const uint8_t *config, size_t config_len, pt_instance **out_instance,
                         char *error, size_t error_capacity) {
    (void)self; (void)host;
    Pixtrack__V1__PluginConfig *cfg = pixtrack__v1__plugin_config__unpack(NULL, config_len, config);
    if (!cfg) { set_error(error, error_capacity, "config does not decode"); return PT_ERR_INVALID_ARGUMENT; }
    pt_instance *inst = calloc(1, sizeof *inst);
    if (!inst) { pixtrack__v1__plugin_config__free_unpacked(cfg, NULL); return PT_ERR_INTERNAL; }
    const char *problem = NULL;
    /* snprintf's return is the length it needed: a value that does not fit is refused, not cut. */
    if (snprintf(inst->base_url, sizeof inst->base_url, "%s", cfg->base_url ? cfg->base_url : "") >= (int)sizeof inst->base_url)
        problem = "base_url is too long";
    for (size_t i = 0; i < cfg->n_credentials; i++)
        if (strcmp(cfg->credentials[i]->key, "api_key") == 0 &&
            snprintf(inst->api_key, sizeof inst->api_key, "%s", cfg->credentials[i]->value) >= (int)sizeof inst->api_key)
            problem = "api_key is too long";
    pixtrack__v1__plugin_config__free_unpacked(cfg, NULL);
    if (!problem && inst->base_url[0] && strncmp(inst->base_url, "http://", 7) && strncmp(inst->base_url, "https://", 8))
        problem = "base_url must be http(s)";
    if (problem) {
        free(inst);
        set_error(error, error_capacity, "%s", problem);
        return PT_ERR_CONFIG;
    }
    g_host->log(call, PT_LOG_INFO, inst->base_url[0] ? "example: online mode" : "example: offline mode");
    *out_instance = inst;
    return PT_OK;
}

static void ex_destroy(pt_instance *instance) { free(instance); }

/* Performs one HTTP request through the host. Returns the decoded answer (free it with
 * pixtrack__v1__http_response__free_unpacked) or NULL when the host refused the call. */
static Pixtrack__V1__HttpResponse *http(pt_call *call, const char *method, const char *url,
                                       const pt_instance *inst, const char *body, int no_side_effects) {
    Pixtrack__V1__HttpRequest req;
    pixtrack__v1__http_request__init(&req);
    Pixtrack__V1__Header auth, ctype;
    pixtrack__v1__header__init(&auth);
    pixtrack__v1__header__init(&ctype);
    Pixtrack__V1__Header *headers[2] = {&auth, &ctype};
    char bearer[300];
    snprintf(bearer, sizeof bearer, "Bearer %s", inst->api_key);
    auth.name = "Authorization";
    auth.value = bearer;
    ctype.name = "Content-Type";
    ctype.value = "application/json";
    req.method = (char *)method;
    req.url = (char *)url;
    req.headers = headers;
    req.n_headers = body ? 2 : 1;
    if (body) { req.body.data = (uint8_t *)body; req.body.len = strlen(body); }
    req.timeout_ms = 3000;
    req.no_side_effects = no_side_effects;
    uint8_t *in = NULL, *answer = NULL;
    size_t in_len = 0, answer_len = 0;
    if (pack(&req.base, &in, &in_len) != PT_OK) return NULL;
    int32_t st = g_host->http_request(call, in, in_len, &answer, &answer_len);
    free(in);
    if (st != PT_OK) return NULL;
    Pixtrack__V1__HttpResponse *resp = pixtrack__v1__http_response__unpack(NULL, answer_len, answer);
    g_host->free_buffer(answer, answer_len);
    return resp;
}

static int32_t ex_create_pix(pt_instance *inst, pt_call *call, const uint8_t *request, size_t request_len,
                             uint8_t **out, size_t *out_len, char *error, size_t error_capacity) {
    CreateReq *req = pixtrack__v1__create_pix_request__unpack(NULL, request_len, request);
    if (!req) { set_error(error, error_capacity, "request does not decode"); return PT_ERR_INVALID_ARGUMENT; }
    char txid[80], code[512], message[256] = "", id_copy[128] = "", pix_copy[512] = "";
    /* Refused before anything is sent (the host makes that NOT_SENT): the reference goes into a
     * JSON string and the offline id, so only plain characters, and it must fit. */
    const char *problem = req->amount_cents <= 0 ? "amount must be positive"
        : !printable(req->reference, strlen(req->reference), 64, 1) ? "reference must be 1-63 plain ASCII characters"
        : NULL;
    if (problem) {
        pixtrack__v1__create_pix_request__free_unpacked(req, NULL);
        set_error(error, error_capacity, "%s", problem);
        return PT_ERR_INVALID_ARGUMENT;
    }
    CreateRes res;
    pixtrack__v1__create_pix_result__init(&res);
    if (!inst->base_url[0]) {
        /* Offline: the id derives from our unique reference (no clock, no counter to share). */
        snprintf(txid, sizeof txid, "ex-%s", req->reference);
        build_br_code(code, sizeof code, (long long)req->amount_cents);
        res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_CREATED;
        res.transaction_id = txid;
        res.pix_code = code;
    } else {
        char url[600], body[256];
        snprintf(url, sizeof url, "%s/charges", inst->base_url);
        snprintf(body, sizeof body, "{\"reference\":\"%s\",\"amount_cents\":%lld}", req->reference,
                 (long long)req->amount_cents);
        Pixtrack__V1__HttpResponse *r = http(call, "POST", url, inst, body, 0);
        if (!r) {
            res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_UNKNOWN;
        } else if (!r->sent) {
            res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_NOT_SENT;
            snprintf(message, sizeof message, "not sent: %s", r->error_message);
        } else if (r->status == 201) {
            const char *id = "";
            for (size_t i = 0; i < r->n_headers; i++)
                if (strcasecmp(r->headers[i]->name, "X-Charge-Id") == 0) id = r->headers[i]->value;
            /* The charge exists: an id or pix code we cannot pass on whole is UNKNOWN, reported,
             * so the reconciler finds the charge by reference. Never a cut or mangled copy. */
            if (!printable(id, strlen(id), sizeof id_copy, 1)) {
                res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_UNKNOWN;
                snprintf(message, sizeof message, "created, but X-Charge-Id is missing, too long or not plain ASCII");
            } else if (!printable((const char *)r->body.data, r->body.len, sizeof pix_copy, 0)) {
                res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_UNKNOWN;
                snprintf(message, sizeof message, "created, but the pix code is empty, too long or not ASCII");
            } else {
                memcpy(id_copy, id, strlen(id) + 1);
                memcpy(pix_copy, r->body.data, r->body.len);
                pix_copy[r->body.len] = 0;
                res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_CREATED; /* the host checks the CRC */
                res.transaction_id = id_copy;
                res.pix_code = pix_copy;
            }
        } else if (r->status >= 400 && r->status < 500) {
            res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_DECLINED;
            snprintf(message, sizeof message, "HTTP %d", (int)r->status);
        } else {
            res.outcome = PIXTRACK__V1__CREATE_OUTCOME__CREATE_OUTCOME_UNKNOWN; /* 5xx, timeout, reset */
            snprintf(message, sizeof message, "HTTP %d %s", (int)r->status, r->error_message);
        }
        if (r) pixtrack__v1__http_response__free_unpacked(r, NULL);
        ascii_only(message);
        res.message = message;
    }
    int32_t st = pack(&res.base, out, out_len);
    pixtrack__v1__create_pix_request__free_unpacked(req, NULL);
    return st;
}

static int body_is(const Pixtrack__V1__HttpResponse *r, const char *word) {
    return r->body.len == strlen(word) && memcmp(r->body.data, word, r->body.len) == 0;
}

static int32_t ex_get_status(pt_instance *inst, pt_call *call, const uint8_t *request, size_t request_len,
                             uint8_t **out, size_t *out_len, char *error, size_t error_capacity) {
    Pixtrack__V1__GetStatusRequest *req = pixtrack__v1__get_status_request__unpack(NULL, request_len, request);
    if (!req) { set_error(error, error_capacity, "request does not decode"); return PT_ERR_INVALID_ARGUMENT; }
    Pixtrack__V1__StatusResult res;
    pixtrack__v1__status_result__init(&res);
    char raw[64] = "";
    int32_t st = PT_OK;
    if (!printable(req->transaction_id, strlen(req->transaction_id), 128, 1)) {
        /* Only ids this plugin returned come back, so anything else is not ours to look up. */
        set_error(error, error_capacity, "transaction id is empty, too long or not plain ASCII");
        st = PT_ERR_INVALID_ARGUMENT;
    } else if (!inst->base_url[0]) {
        res.status = PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_PENDING; /* offline: never paid */
    } else {
        char url[700]; /* base_url < 512 and id < 128: always fits */
        snprintf(url, sizeof url, "%s/charges/%s", inst->base_url, req->transaction_id);
        Pixtrack__V1__HttpResponse *r = http(call, "GET", url, inst, NULL, 1);
        if (!r || r->status == 0) {
            set_error(error, error_capacity, "no answer");
            st = PT_ERR_UNAVAILABLE;
        } else {
            /* Whole-body comparisons below; raw is only the logged copy (cut, made ASCII). */
            snprintf(raw, sizeof raw, "%.*s", (int)r->body.len, (const char *)r->body.data);
            ascii_only(raw);
            if (r->status == 404) res.status = PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_NOT_FOUND;
            else if (body_is(r, "paid")) res.status = PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_PAID;
            else if (body_is(r, "pending")) res.status = PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_PENDING;
            else if (body_is(r, "expired")) res.status = PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_EXPIRED;
            else res.status = PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_UNKNOWN; /* never guess paid */
            res.raw_status = raw;
        }
        if (r) pixtrack__v1__http_response__free_unpacked(r, NULL);
    }
    if (st == PT_OK) st = pack(&res.base, out, out_len);
    pixtrack__v1__get_status_request__free_unpacked(req, NULL);
    return st;
}

static int32_t ex_parse_webhook(pt_instance *inst, pt_call *call, const uint8_t *request, size_t request_len,
                                uint8_t **out, size_t *out_len, char *error, size_t error_capacity) {
    (void)inst; (void)call;
    Pixtrack__V1__ParseWebhookRequest *req = pixtrack__v1__parse_webhook_request__unpack(NULL, request_len, request);
    if (!req) { set_error(error, error_capacity, "request does not decode"); return PT_ERR_INVALID_ARGUMENT; }
    /* A local copy to tokenize (the request is the host's, and read-only); a body that does not
     * fit, or hides a NUL, is refused rather than read in part. */
    char body[512], id[128] = "", status[32] = "";
    const char *problem = NULL;
    if (req->body.len >= sizeof body || memchr(req->body.data, 0, req->body.len)) {
        problem = "webhook body is longer than 511 bytes or contains NUL";
    } else {
        if (req->body.len) memcpy(body, req->body.data, req->body.len);
        body[req->body.len] = 0;
        char *rest = NULL; /* strtok_r: calls run concurrently, strtok's hidden state would be shared */
        for (char *tok = strtok_r(body, "&", &rest); tok && !problem; tok = strtok_r(NULL, "&", &rest)) {
            /* Result strings must be valid UTF-8 and end up in logs: printable ASCII only. */
            if (strncmp(tok, "id=", 3) == 0 && !printable(tok + 3, strlen(tok + 3), sizeof id, 1))
                problem = "webhook id is empty, longer than 127 bytes or not plain ASCII";
            else if (strncmp(tok, "id=", 3) == 0)
                memcpy(id, tok + 3, strlen(tok + 3) + 1);
            if (strncmp(tok, "status=", 7) == 0 && tok[7] && !printable(tok + 7, strlen(tok + 7), sizeof status, 1))
                problem = "webhook status is longer than 31 bytes or not plain ASCII";
            else if (strncmp(tok, "status=", 7) == 0)
                memcpy(status, tok + 7, strlen(tok + 7) + 1);
        }
        if (!problem && !id[0]) problem = "webhook without id";
    }
    pixtrack__v1__parse_webhook_request__free_unpacked(req, NULL);
    if (problem) { set_error(error, error_capacity, "%s", problem); return PT_ERR_INVALID_ARGUMENT; }
    Pixtrack__V1__WebhookResult res;
    pixtrack__v1__webhook_result__init(&res);
    res.transaction_id = id;
    res.raw_status = status;
    res.status = strcmp(status, "paid") == 0 ? PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_PAID
                                             : PIXTRACK__V1__GATEWAY_STATUS__GATEWAY_STATUS_UNKNOWN;
    char event[sizeof id + sizeof status + 1]; /* always fits */
    snprintf(event, sizeof event, "%s:%s", id, status);
    res.event_id = event;
    return pack(&res.base, out, out_len);
}

static void ex_free_buffer(uint8_t *buffer, size_t len) { (void)len; free(buffer); }

static const pt_gateway_plugin plugin = {
    .struct_size = sizeof(pt_gateway_plugin),
    .abi_major = PT_GATEWAY_ABI_MAJOR,
    .abi_minor = PT_GATEWAY_ABI_MINOR,
    .name = "example_c",
    .version = "1.0.0",
    .description = "Example gateway written in plain C",
    .capabilities = PT_CAP_WEBHOOKS,
    .create = ex_create,
    .destroy = ex_destroy,
    .create_pix = ex_create_pix,
    .get_status = ex_get_status,
    .parse_webhook = ex_parse_webhook,
    .free_buffer = ex_free_buffer,
};

__attribute__((visibility("default")))
const pt_gateway_plugin *pixtrack_gateway_entry(const pt_host_api *host) {
    if (!host || host->abi_major != PT_GATEWAY_ABI_MAJOR || host->struct_size < PT_HOST_API_SIZE_V1_0) return NULL;
    g_host = host;
    return &plugin;
}
