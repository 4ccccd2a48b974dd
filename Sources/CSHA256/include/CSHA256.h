#ifndef PIXTRACK_CSHA256_H
#define PIXTRACK_CSHA256_H
/* SHA-256 (FIPS 180-4) for hashing plugin files. In C so debug builds hash megabytes quickly. */
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[8];
    uint64_t length;      /* bytes hashed so far */
    uint8_t block[64];
    size_t used;          /* bytes waiting in block */
} pt_sha256_ctx;

void pt_sha256_init(pt_sha256_ctx *ctx);
void pt_sha256_update(pt_sha256_ctx *ctx, const void *data, size_t len);
/* Writes the 32-byte digest; the context must be initialised again before reuse. */
void pt_sha256_final(pt_sha256_ctx *ctx, uint8_t out[32]);
#endif
