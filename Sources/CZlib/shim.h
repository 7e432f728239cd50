#ifndef PETREL_CZLIB_SHIM_H
#define PETREL_CZLIB_SHIM_H
#include <zlib.h>

/* deflateInit2/inflateInit2 are macros that Swift cannot import. */
static inline int petrel_deflate_init2(z_streamp strm, int level, int window_bits, int mem_level, int strategy) {
    return deflateInit2(strm, level, Z_DEFLATED, window_bits, mem_level, strategy);
}
static inline int petrel_inflate_init2(z_streamp strm, int window_bits) {
    return inflateInit2(strm, window_bits);
}
#endif
