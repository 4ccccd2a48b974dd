#ifndef PIXTRACK_CPROTOBUFC_SHIM_H
#define PIXTRACK_CPROTOBUFC_SHIM_H
#include <protobuf-c/protobuf-c.h>

/// True when `s` is protobuf-c's shared default string (an unset proto3 string field).
/// That pointer is static and must never be freed; Swift cannot name it, hence this helper.
static inline int pt_is_default_string(const char *s) { return s == protobuf_c_empty_string; }

/// The shared default string, for building messages whose string field is unset.
static inline char *pt_default_string(void) { return (char *)protobuf_c_empty_string; }
#endif
