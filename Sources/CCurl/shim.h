#ifndef PIXTRACK_CCURL_SHIM_H
#define PIXTRACK_CCURL_SHIM_H
#include <curl/curl.h>

/* curl_easy_setopt / curl_easy_getinfo are variadic: Swift cannot call them. Typed wrappers. */
static inline CURLcode pt_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode pt_curl_setopt_ptr(CURL *h, CURLoption o, const void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode pt_curl_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode pt_curl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode pt_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode pt_curl_getinfo_double(CURL *h, CURLINFO i, double *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode pt_curl_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }

/* Callback setters (function pointers cannot go through the `const void *` wrapper). */
/* CURLOPT_WRITEFUNCTION and CURLOPT_HEADERFUNCTION share curl_write_callback's signature. */
static inline CURLcode pt_curl_setopt_write_fn(CURL *h, CURLoption o, curl_write_callback f) { return curl_easy_setopt(h, o, f); }
/* CURLOPT_PREREQFUNCTION (7.80+): called once the connection is up, right before the request is sent. */
typedef int (*pt_curl_prereq_callback)(void *clientp, char *conn_primary_ip, char *conn_local_ip,
                                       int conn_primary_port, int conn_local_port);
static inline CURLcode pt_curl_setopt_prereq_fn(CURL *h, pt_curl_prereq_callback f) { return curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, f); }
#endif
