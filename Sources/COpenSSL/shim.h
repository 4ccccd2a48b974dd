#ifndef PIXTRACK_COPENSSL_SHIM_H
#define PIXTRACK_COPENSSL_SHIM_H
/* OpenSSL 3 (Debian's libssl-dev). What Swift cannot call directly: the function-like macros
 * (SSL_CTX_set_mode, SSL_set_tlsext_host_name, BIO_set_mem_eof_return, ...) and the ALPN
 * selection callback. Everything here is a thin wrapper; the policy lives in
 * Sources/HTTP2/TLS.swift. */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>   /* AES-256-GCM, SHA-256 (Sources/Secrets) */
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

/* What the server offers, in order of preference (ALPN wire format). */
static const unsigned char pt_tls_server_protocols[] = "\x02h2\x08http/1.1";

/* ALPN: h2 when the client offers it, else http/1.1; a client offering neither goes on without
 * ALPN (the first bytes then decide, as on plaintext). An empty client list is refused by
 * OpenSSL's parser before we get here, and SSL_select_next_proto is only trusted on a match. */
static int pt_tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                              const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    if (inlen == 0) return SSL_TLSEXT_ERR_NOACK;
    unsigned char *selected = NULL;
    unsigned char selected_len = 0;
    int rc = SSL_select_next_proto(&selected, &selected_len, pt_tls_server_protocols,
                                   (unsigned int)(sizeof pt_tls_server_protocols - 1), in, inlen);
    if (rc != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_NOACK;
    *out = selected;
    *outlen = selected_len;
    return SSL_TLSEXT_ERR_OK;
}

/* A server context: TLS 1.2+, no renegotiation, no compression, server cipher order, ALPN. */
static inline SSL_CTX *pt_tls_server_ctx_new(void) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(ctx, pt_tls_alpn_select, NULL);
    return ctx;
}

/* A client context: TLS 1.2+, peer verification on. `ca_file` NULL: the system's trust store. */
static inline SSL_CTX *pt_tls_client_ctx_new(const char *ca_file) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) { SSL_CTX_free(ctx); return NULL; }
    return ctx;
}

/* Client: SNI plus the name (or IP address) the certificate must carry; with `offer_h2`, ALPN
 * offers h2 (and only h2). */
static inline int pt_tls_client_expect(SSL *ssl, const char *name, int offer_h2) {
    static const unsigned char h2[] = "\x02h2";
    if (offer_h2 && SSL_set_alpn_protos(ssl, h2, 3) != 0) return 0;
    unsigned char addr[16];
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1) {
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    }
    if (SSL_set_tlsext_host_name(ssl, name) != 1) return 0;
    return SSL_set1_host(ssl, name);
}

/* A memory BIO that reports "retry" (not EOF) when empty. */
static inline BIO *pt_tls_mem_bio(void) {
    BIO *b = BIO_new(BIO_s_mem());
    if (b) BIO_set_mem_eof_return(b, -1);
    return b;
}

/* The negotiated ALPN protocol into `out` (NUL-terminated, empty when none). */
static inline void pt_tls_alpn(const SSL *ssl, char *out, size_t cap) {
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    if (n >= cap) n = 0;
    if (n) memcpy(out, p, n);
    out[n] = 0;
}

/* The oldest error on this thread's OpenSSL queue as text ("" when none); clears the queue. */
static inline void pt_tls_error(char *out, size_t cap) {
    unsigned long e = ERR_get_error();
    out[0] = 0;
    if (e) ERR_error_string_n(e, out, cap);
    ERR_clear_error();
}

/* Subject and expiry of the context's certificate, for the startup and reload log lines. */
static inline void pt_tls_certificate_summary(SSL_CTX *ctx, char *out, size_t cap) {
    out[0] = 0;
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (!cert) return;
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) return;
    ASN1_TIME_print(b, X509_get0_notAfter(cert));
    char expiry[64];
    int n = BIO_read(b, expiry, sizeof expiry - 1);
    expiry[n > 0 ? n : 0] = 0;
    BIO_free(b);
    snprintf(out, cap, "%s, valid until %s", subject, expiry);
}
#endif
