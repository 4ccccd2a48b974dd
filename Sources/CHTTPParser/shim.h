#ifndef PIXTRACK_CHTTPPARSER_SHIM_H
#define PIXTRACK_CHTTPPARSER_SHIM_H
#include <http_parser.h>

/* Bitfields of http_parser, read through functions so Swift never depends on their layout. */
static inline unsigned int pt_http_errno(const http_parser *p) { return p->http_errno; }
static inline unsigned int pt_http_method(const http_parser *p) { return p->method; }
static inline unsigned int pt_http_upgrade(const http_parser *p) { return p->upgrade; }
#endif
