/*
 * engines: permessage-deflate (RFC 7692) engines measured on Petrel's tick stream.
 *
 * Per message it does what a Petrel server does for one echoed tick: inflate the client's
 * compressed message (payload, then the 00 00 ff ff the sender removed) and deflate the reply
 * with a sync flush, dropping the trailing 00 00 ff ff. The client's frames are made with zlib
 * before the measured part, both with client context takeover and without it.
 *
 *   engines verify              round trips, cross-engine checks, sizes, memory per stream
 *   engines run CASE N          the measured loop only: N messages of CASE (for callgrind)
 *   engines time CASE [N]       wall-clock ns per message for CASE (native)
 *   engines list                the cases measure.sh runs
 *
 * CASE is "inf:ENGINE:MODE" or "def:ENGINE:key=value,...":
 *   inf:zlib:ctx      frames with client context, one inflater kept (the only valid way)
 *   inf:zlib:keep     independent frames, inflater kept (Petrel today: no client_no_context_takeover)
 *   inf:zlib:reset    independent frames, inflateReset after each (client_no_context_takeover)
 *   inf:isal:ctx|keep|reset, inf:isal:stateless (isal_inflate_stateless, independent frames)
 *   inf:libdeflate:stateless (whole-buffer, independent frames only)
 *   def:zlib:level=1,mem=8,wbits=15,strat=default|fixed|huffman,mode=ctx|reset
 *   def:isal:level=0..3,mode=ctx|reset|full|stateless,huff=default|static,hist=0..15
 *   def:libdeflate:level=1..12  (independent messages only)
 *
 * The tick corpus is the load generator's (Benchmarks/load/petrel-load.c without --ticks): the
 * same table, seed and format, so the first 2000 lines are the ones petrel-load sends.
 */
#define _GNU_SOURCE
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <zlib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTICKS 4000
#define TAIL_LEN 4
static const uint8_t sync_tail[4] = { 0x00, 0x00, 0xff, 0xff };

static void die(const char *fmt, const char *a, long b)
{
    fprintf(stderr, "engines: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(1);
}

/* ---------------------------------------------------------------- the tick corpus */

static const struct { const char *sym, *name; double price; } table[] = {
    { "AAPL", "Apple Inc.", 189.25 }, { "MSFT", "Microsoft Corporation", 415.10 },
    { "GOOGL", "Alphabet Inc.", 141.80 }, { "AMZN", "Amazon.com, Inc.", 178.15 },
    { "NVDA", "NVIDIA Corporation", 875.30 }, { "META", "Meta Platforms, Inc.", 502.30 },
    { "TSLA", "Tesla, Inc.", 175.20 }, { "BRK.B", "Berkshire Hathaway Inc.", 408.50 },
    { "JPM", "JPMorgan Chase & Co.", 195.40 }, { "V", "Visa Inc.", 279.60 },
    { "JNJ", "Johnson & Johnson", 158.20 }, { "WMT", "Walmart Inc.", 60.10 },
    { "PG", "The Procter & Gamble Company", 161.30 }, { "MA", "Mastercard Incorporated", 472.90 },
    { "UNH", "UnitedHealth Group Incorporated", 492.40 }, { "HD", "The Home Depot, Inc.", 381.70 },
    { "XOM", "Exxon Mobil Corporation", 113.50 }, { "CVX", "Chevron Corporation", 155.80 },
    { "KO", "The Coca-Cola Company", 60.25 }, { "PEP", "PepsiCo, Inc.", 168.90 },
    { "ABBV", "AbbVie Inc.", 178.30 }, { "MRK", "Merck & Co., Inc.", 127.60 },
    { "COST", "Costco Wholesale Corporation", 725.40 }, { "AVGO", "Broadcom Inc.", 1295.00 },
    { "ADBE", "Adobe Inc.", 505.20 }, { "CRM", "Salesforce, Inc.", 301.50 },
    { "NFLX", "Netflix, Inc.", 615.80 }, { "AMD", "Advanced Micro Devices, Inc.", 178.60 },
    { "INTC", "Intel Corporation", 42.80 }, { "CSCO", "Cisco Systems, Inc.", 49.90 },
    { "ORCL", "Oracle Corporation", 125.30 }, { "DIS", "The Walt Disney Company", 112.40 },
    { "NKE", "NIKE, Inc.", 94.10 }, { "MCD", "McDonald's Corporation", 281.20 },
    { "BA", "The Boeing Company", 190.70 }, { "IBM", "International Business Machines Corporation", 191.30 },
    { "QCOM", "QUALCOMM Incorporated", 168.40 }, { "PYPL", "PayPal Holdings, Inc.", 64.20 },
    { "UBER", "Uber Technologies, Inc.", 77.90 }, { "SBUX", "Starbucks Corporation", 91.50 },
};
#define NTABLE (int)(sizeof table / sizeof table[0])

static uint64_t seed;
static uint64_t next64(void)
{
    seed ^= seed >> 12;
    seed ^= seed << 25;
    seed ^= seed >> 27;
    return seed * 0x2545F4914F6CDD1Dull;
}

static char *tick[NTICKS];
static size_t tick_len[NTICKS];

static void make_ticks(void)
{
    seed = 0x9E3779B97F4A7C15ull;
    double price[NTABLE];
    long volume[NTABLE];
    for (int i = 0; i < NTABLE; i++) {
        price[i] = table[i].price;
        volume[i] = 100000 + (long)(next64() % 900000);
    }
    long ms = 0;
    for (int n = 0; n < NTICKS; n++) {
        int t = (int)(next64() % NTABLE);
        price[t] *= 1 + ((double)(next64() >> 11) / 9007199254740992.0 - 0.5) * 0.004;
        volume[t] += 100 * (long)(1 + next64() % 50);
        ms += (long)(next64() % 250);
        double change = price[t] - table[t].price;
        char buf[512];
        int l = snprintf(buf, sizeof buf,
            "{\"ticker\":\"%s\",\"company\":\"%s\",\"price\":%.2f,\"change\":%.2f,\"changePercent\":%.2f,"
            "\"volume\":%ld,\"time\":\"2024-03-15T%02ld:%02ld:%02ld.%03ldZ\"}",
            table[t].sym, table[t].name, price[t], change, change / table[t].price * 100, volume[t],
            9 + (30 * 60 + ms / 1000) / 3600, (30 + ms / 60000) % 60, ms / 1000 % 60, ms % 1000);
        tick[n] = strdup(buf);
        tick_len[n] = (size_t)l;
    }
}

/* ---------------------------------------------------------------- compressed message stores */

typedef struct {
    uint8_t *data;
    size_t cap, used;
    size_t off[NTICKS + 1];
    int count;
} store;

static void store_init(store *s)
{
    s->cap = NTICKS * 600;
    s->data = malloc(s->cap);
    s->used = 0;
    s->count = 0;
    s->off[0] = 0;
}
static uint8_t *store_room(store *s) { return s->data + s->used; }
static void store_commit(store *s, size_t n)
{
    s->used += n;
    s->off[++s->count] = s->used;
}
static const uint8_t *msg_at(const store *s, int i, size_t *len)
{
    *len = s->off[i + 1] - s->off[i];
    return s->data + s->off[i];
}

/* The client's frames: zlib at its defaults (level 6, window 15, memLevel 8), as browsers and
 * the Python/Node clients use it. ctx: one stream for all messages; noctx: deflateReset each. */
static store client_ctx, client_noctx, client_fixed;

static void zdeflate_msg(z_stream *z, const uint8_t *in, size_t len, store *out)
{
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)len;
    z->next_out = store_room(out);
    z->avail_out = 1024;
    if (deflate(z, Z_SYNC_FLUSH) != Z_OK || z->avail_in || z->avail_out == 0)
        die("%s deflate failed %ld", "client", 0);
    size_t n = 1024 - z->avail_out;
    if (n < 4 || memcmp(out->data + out->used + n - 4, sync_tail, 4))
        die("%s: no sync tail %ld", "zlib", 0);
    store_commit(out, n - 4);
}

static int have_client_frames;
static void make_client_frames(void)
{
    if (have_client_frames++)
        return;
    store_init(&client_ctx);
    store_init(&client_noctx);
    store_init(&client_fixed);
    z_stream a = { 0 }, b = { 0 }, f = { 0 };
    if (deflateInit2(&a, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK
        || deflateInit2(&b, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK
        || deflateInit2(&f, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_FIXED) != Z_OK)
        die("%s init %ld", "deflateInit2", 0);
    for (int i = 0; i < NTICKS; i++) {
        zdeflate_msg(&a, (const uint8_t *)tick[i], tick_len[i], &client_ctx);
        deflateReset(&b);
        zdeflate_msg(&b, (const uint8_t *)tick[i], tick_len[i], &client_noctx);
        /* independent messages in fixed-Huffman blocks (what ISA-L's static table sends) */
        deflateReset(&f);
        zdeflate_msg(&f, (const uint8_t *)tick[i], tick_len[i], &client_fixed);
    }
    deflateEnd(&a);
    deflateEnd(&b);
    deflateEnd(&f);
}

/* ---------------------------------------------------------------- allocation accounting */

static long zbytes; /* zlib bytes currently allocated through zalloc */
static voidpf count_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    size_t n = (size_t)items * size;
    size_t *p = malloc(n + 16);
    if (!p)
        return NULL;
    p[0] = n;
    zbytes += (long)n;
    return (uint8_t *)p + 16;
}
static void count_free(voidpf opaque, voidpf ptr)
{
    (void)opaque;
    size_t *p = (size_t *)((uint8_t *)ptr - 16);
    zbytes -= (long)p[0];
    free(p);
}

static long ldbytes;
static void *ld_alloc(size_t n)
{
    ldbytes += (long)n;
    return malloc(n);
}

/* ---------------------------------------------------------------- case parsing */

typedef struct {
    int inflate;       /* 1: inflate side, 0: deflate side */
    char engine[16];   /* zlib, isal, libdeflate */
    char mode[16];     /* ctx keep reset stateless full */
    int level, mem, wbits, hist;
    char strat[16], huff[16];
} spec;

static int get_kv(const char *s, const char *key, char *val, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = s; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            const char *v = p + kl + 1;
            size_t n = strcspn(v, ",");
            if (n >= cap)
                n = cap - 1;
            memcpy(val, v, n);
            val[n] = 0;
            return 1;
        }
    }
    return 0;
}

static spec parse_spec(const char *text)
{
    spec c;
    memset(&c, 0, sizeof c);
    char kind[8] = { 0 }, rest[128] = { 0 };
    if (sscanf(text, "%3[a-z]:%15[a-z]:%127s", kind, c.engine, rest) < 2)
        die("bad case %s %ld", text, 0);
    c.inflate = !strcmp(kind, "inf");
    c.level = 1, c.mem = 8, c.wbits = 15, c.hist = 0;
    strcpy(c.strat, "default");
    strcpy(c.huff, "default");
    strcpy(c.mode, "ctx");
    if (c.inflate) {
        if (rest[0])
            snprintf(c.mode, sizeof c.mode, "%s", rest);
        return c;
    }
    char v[16];
    if (get_kv(rest, "level", v, sizeof v)) c.level = atoi(v);
    if (get_kv(rest, "mem", v, sizeof v)) c.mem = atoi(v);
    if (get_kv(rest, "wbits", v, sizeof v)) c.wbits = atoi(v);
    if (get_kv(rest, "hist", v, sizeof v)) c.hist = atoi(v);
    if (get_kv(rest, "strat", v, sizeof v)) snprintf(c.strat, sizeof c.strat, "%s", v);
    if (get_kv(rest, "huff", v, sizeof v)) snprintf(c.huff, sizeof c.huff, "%s", v);
    if (get_kv(rest, "mode", v, sizeof v)) snprintf(c.mode, sizeof c.mode, "%s", v);
    if (!strcmp(c.engine, "libdeflate"))
        strcpy(c.mode, "stateless");
    return c;
}

/* ---------------------------------------------------------------- inflaters */

typedef struct {
    spec c;
    z_stream z;
    struct inflate_state *is;
    struct libdeflate_decompressor *ld;
    uint8_t scratch[1024];
    long mem; /* bytes held by one stream (0: per-thread, not per connection) */
} inflater;

static void inflater_open(inflater *f, spec c)
{
    memset(f, 0, sizeof *f);
    f->c = c;
    if (!strcmp(c.engine, "zlib")) {
        f->z.zalloc = count_alloc;
        f->z.zfree = count_free;
        long before = zbytes;
        if (inflateInit2(&f->z, -15) != Z_OK)
            die("%s %ld", "inflateInit2", 0);
        f->mem = zbytes - before; /* the 32K window comes on first use: counted after a message */
    } else if (!strcmp(c.engine, "isal")) {
        f->is = aligned_alloc(64, (sizeof *f->is + 63) & ~(size_t)63);
        isal_inflate_init(f->is);
        f->is->crc_flag = ISAL_DEFLATE;
        f->is->hist_bits = 15;
        f->mem = (long)sizeof *f->is;
    } else if (!strcmp(c.engine, "libdeflate")) {
        long before = ldbytes;
        f->ld = libdeflate_alloc_decompressor();
        f->mem = ldbytes - before;
    } else
        die("unknown engine %s %ld", c.engine, 0);
}

static void inflater_close(inflater *f)
{
    if (!strcmp(f->c.engine, "zlib"))
        inflateEnd(&f->z);
    else if (f->is)
        free(f->is);
    else if (f->ld)
        libdeflate_free_decompressor(f->ld);
}

/* Inflates one message (payload + the 00 00 ff ff tail) into out; returns its length. */
static size_t inflate_msg(inflater *f, const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    const spec *c = &f->c;
    if (!strcmp(c->engine, "zlib") && !strcmp(c->mode, "keep1")) {
        /* One inflate call: the tail appended to a copy of the payload (in Petrel: appended in
         * the receive buffer's spare room), instead of a second call for the 4 bytes. */
        if (len + 4 > sizeof f->scratch)
            die("message too long %s %ld", "", (long)len);
        memcpy(f->scratch, in, len);
        memcpy(f->scratch + len, sync_tail, 4);
        z_stream *z = &f->z;
        z->next_in = f->scratch;
        z->avail_in = (uInt)len + 4;
        z->next_out = out;
        z->avail_out = (uInt)cap;
        int rc = inflate(z, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END)
            die("zlib inflate %s %ld", "rc", rc);
        return cap - z->avail_out;
    }
    if (!strcmp(c->engine, "zlib")) {
        z_stream *z = &f->z;
        z->next_in = (Bytef *)in;
        z->avail_in = (uInt)len;
        z->next_out = out;
        z->avail_out = (uInt)cap;
        int rc = inflate(z, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            die("zlib inflate %s %ld", "rc", rc);
        z->next_in = (Bytef *)sync_tail;
        z->avail_in = 4;
        rc = inflate(z, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END)
            die("zlib inflate tail %s %ld", "rc", rc);
        size_t n = cap - z->avail_out;
        if (!strcmp(c->mode, "reset"))
            inflateReset(z);
        return n;
    }
    if (!strcmp(c->engine, "isal") && strcmp(c->mode, "stateless")) {
        struct inflate_state *s = f->is;
        s->next_in = (uint8_t *)in;
        s->avail_in = (uint32_t)len;
        s->next_out = out;
        s->avail_out = (uint32_t)cap;
        int rc = isal_inflate(s);
        if (rc != ISAL_DECOMP_OK)
            die("isal_inflate %s %ld", "rc", rc);
        if (s->block_state == ISAL_BLOCK_FINISH) {
            /* A final block (BFINAL=1) ended the message: the rest is ignored (§7.2.3.4).
             * Keeping context after it would need isal_inflate_set_dict with the old window. */
            size_t n = cap - s->avail_out;
            if (strcmp(c->mode, "reset"))
                die("final block under context takeover (isal) %s %ld", "", 0);
            isal_inflate_reset(s);
            s->crc_flag = ISAL_DEFLATE;
            s->hist_bits = 15;
            return n;
        }
        s->next_in = (uint8_t *)sync_tail;
        s->avail_in = 4;
        rc = isal_inflate(s);
        if (rc != ISAL_DECOMP_OK || s->avail_in)
            die("isal_inflate tail %s %ld", "rc", rc);
        size_t n = cap - s->avail_out;
        if (!strcmp(c->mode, "reset")) {
            isal_inflate_reset(s);
            s->crc_flag = ISAL_DEFLATE;
            s->hist_bits = 15;
        }
        return n;
    }
    /* Whole-buffer decoders: the message and its tail in one buffer. In Petrel the tail would
     * be appended in the receive buffer's spare room; here a copy (about 100 bytes). */
    if (len + 6 > sizeof f->scratch)
        die("message too long %s %ld", "", (long)len);
    memcpy(f->scratch, in, len);
    memcpy(f->scratch + len, sync_tail, 4);
    if (!strcmp(c->engine, "isal")) {
        struct inflate_state *s = f->is;
        isal_inflate_init(s); /* stateless decoding needs no history; init is what the API asks */
        s->next_in = f->scratch;
        s->avail_in = (uint32_t)len + 4;
        s->next_out = out;
        s->avail_out = (uint32_t)cap;
        s->crc_flag = ISAL_DEFLATE;
        int rc = isal_inflate_stateless(s);
        if (rc != ISAL_DECOMP_OK && rc != ISAL_END_INPUT)
            die("isal_inflate_stateless %s %ld", "rc", rc);
        return cap - s->avail_out;
    }
    /* libdeflate stops only at a final block: add an empty one (fixed Huffman, BFINAL=1). */
    f->scratch[len + 4] = 0x03;
    f->scratch[len + 5] = 0x00;
    size_t actual = 0;
    enum libdeflate_result r = libdeflate_deflate_decompress_ex(f->ld, f->scratch, len + 6, out, cap, NULL, &actual);
    if (r != LIBDEFLATE_SUCCESS)
        die("libdeflate_deflate_decompress %s %ld", "rc", (long)r);
    return actual;
}

/* ---------------------------------------------------------------- deflaters */

typedef struct {
    spec c;
    z_stream z;
    struct isal_zstream *is;
    uint8_t *level_buf;
    uint32_t level_buf_size;
    struct libdeflate_compressor *ld;
    long mem;
} deflater;

static uint32_t isal_level_buf_size(int level)
{
    /* The smallest suggested buffer for each level: enough for 170-byte messages. */
    switch (level) {
    case 0: return 0;
    case 1: return ISAL_DEF_LVL1_MIN;
    case 2: return ISAL_DEF_LVL2_MIN;
    default: return ISAL_DEF_LVL3_MIN;
    }
}

static void isal_setup(deflater *d)
{
    struct isal_zstream *s = d->is;
    s->level = (uint32_t)d->c.level;
    s->level_buf = d->level_buf;
    s->level_buf_size = d->level_buf_size;
    s->gzip_flag = IGZIP_DEFLATE;
    s->hist_bits = (uint16_t)d->c.hist;
    s->end_of_stream = 0;
    s->flush = !strcmp(d->c.mode, "full") || !strcmp(d->c.mode, "stateless") ? FULL_FLUSH : SYNC_FLUSH;
}

static void deflater_open(deflater *d, spec c)
{
    memset(d, 0, sizeof *d);
    d->c = c;
    if (!strcmp(c.engine, "zlib")) {
        int strat = !strcmp(c.strat, "fixed") ? Z_FIXED : !strcmp(c.strat, "huffman") ? Z_HUFFMAN_ONLY
            : !strcmp(c.strat, "rle") ? Z_RLE : Z_DEFAULT_STRATEGY;
        d->z.zalloc = count_alloc;
        d->z.zfree = count_free;
        long before = zbytes;
        if (deflateInit2(&d->z, c.level, Z_DEFLATED, -c.wbits, c.mem, strat) != Z_OK)
            die("deflateInit2 %s %ld", "", 0);
        d->mem = zbytes - before;
    } else if (!strcmp(c.engine, "isal")) {
        d->is = aligned_alloc(64, (sizeof *d->is + 63) & ~(size_t)63);
        d->level_buf_size = isal_level_buf_size(c.level);
        d->level_buf = d->level_buf_size ? aligned_alloc(64, (d->level_buf_size + 63) & ~(size_t)63) : NULL;
        if (!strcmp(c.mode, "stateless"))
            isal_deflate_stateless_init(d->is);
        else
            isal_deflate_init(d->is);
        isal_setup(d);
        if (!strcmp(c.huff, "static") && isal_deflate_set_hufftables(d->is, NULL, IGZIP_HUFFTABLE_STATIC))
            die("isal_deflate_set_hufftables %s %ld", "", 0);
        d->mem = (long)sizeof *d->is + (long)d->level_buf_size;
    } else if (!strcmp(c.engine, "libdeflate")) {
        long before = ldbytes;
        d->ld = libdeflate_alloc_compressor(c.level);
        d->mem = ldbytes - before;
    } else
        die("unknown engine %s %ld", c.engine, 0);
}

static void deflater_close(deflater *d)
{
    if (!strcmp(d->c.engine, "zlib"))
        deflateEnd(&d->z);
    else if (d->is) {
        free(d->is);
        free(d->level_buf);
    } else if (d->ld)
        libdeflate_free_compressor(d->ld);
}

static long stateless_fallbacks;

/* Compresses one whole message into out (RFC 7692 §7.2.1); returns the payload length. */
static size_t deflate_msg(deflater *d, const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    const spec *c = &d->c;
    if (!strcmp(c->engine, "zlib")) {
        z_stream *z = &d->z;
        z->next_in = (Bytef *)in;
        z->avail_in = (uInt)len;
        z->next_out = out;
        z->avail_out = (uInt)cap;
        int rc = deflate(z, Z_SYNC_FLUSH);
        if (rc != Z_OK || z->avail_in || z->avail_out == 0)
            die("zlib deflate %s %ld", "rc", rc);
        size_t n = cap - z->avail_out;
        if (!strcmp(c->mode, "reset"))
            deflateReset(z);
        return n - 4; /* a sync flush ends in 00 00 ff ff (checked in verify) */
    }
    if (!strcmp(c->engine, "isal")) {
        struct isal_zstream *s = d->is;
        if (!strcmp(c->mode, "stateless")) {
            isal_deflate_stateless_init(s);
            isal_setup(d);
            if (!strcmp(c->huff, "static"))
                isal_deflate_set_hufftables(s, NULL, IGZIP_HUFFTABLE_STATIC);
        }
        s->next_in = (uint8_t *)in;
        s->avail_in = (uint32_t)len;
        s->next_out = out;
        s->avail_out = (uint32_t)cap;
        int rc;
        if (!strcmp(c->mode, "stateless")) {
            rc = isal_deflate_stateless(s);
        } else {
            rc = isal_deflate(s);
            if (rc == COMP_OK && (s->avail_in || s->internal_state.state != ZSTATE_NEW_HDR))
                die("isal_deflate did not finish the flush in one call %s %ld", "", s->internal_state.state);
        }
        if (rc != COMP_OK)
            die("isal_deflate %s %ld", "rc", rc);
        size_t n = cap - s->avail_out;
        if (!strcmp(c->mode, "reset"))
            isal_deflate_reset(s);
        if (!strcmp(c->mode, "stateless") && (n < 4 || memcmp(out + n - 4, sync_tail, 4))) {
            /* Stateless output that fell back to a stored block ends byte-aligned without the
             * empty stored block: §7.2.1 step 2 appends one, step 3 strips its last 4 octets,
             * which leaves its header octet 0x00. Returned so that out[n] is not 00 00 ff ff. */
            out[n] = 0x00;
            stateless_fallbacks++;
            return n + 1;
        }
        return n - 4;
    }
    /* libdeflate: one final block (BFINAL=1), zero-padded to a byte. RFC 7692 §7.2.3.4: add the
     * header bits of an empty stored block (BFINAL=0, BTYPE=00) in one more octet, then the
     * 00 00 ff ff that §7.2.1 step 3 removes is simply not written. */
    size_t n = libdeflate_deflate_compress(d->ld, in, len, out, cap - 1);
    if (n == 0)
        die("libdeflate_deflate_compress %s %ld", "failed", 0);
    out[n] = 0x00;
    return n + 1;
}

/* ---------------------------------------------------------------- the measured loops */

/* Inflate modes: ctx (client context), keep/reset/stateless (independent frames), and the same
 * with "-fixed" (independent frames in fixed-Huffman blocks), e.g. inf:zlib:keep-fixed. */
static const store *frames_for(spec *c)
{
    char *dash = strstr(c->mode, "-fixed");
    if (dash) {
        *dash = 0;
        return &client_fixed;
    }
    return !strcmp(c->mode, "ctx") ? &client_ctx : &client_noctx;
}

static uint8_t outbuf[4096];

static long run_inflate(spec c, int n, store *keep)
{
    make_client_frames();
    const store *frames = frames_for(&c);
    inflater f;
    inflater_open(&f, c);
    long total = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const uint8_t *m = msg_at(frames, i % NTICKS, &len);
        size_t out = inflate_msg(&f, m, len, keep ? store_room(keep) : outbuf, sizeof outbuf);
        if (keep)
            store_commit(keep, out);
        total += (long)out;
    }
    inflater_close(&f);
    return total;
}

static long run_deflate(spec c, int n, store *keep)
{
    deflater d;
    deflater_open(&d, c);
    long total = 0;
    for (int i = 0; i < n; i++) {
        int k = i % NTICKS;
        size_t out = deflate_msg(&d, (const uint8_t *)tick[k], tick_len[k], keep ? store_room(keep) : outbuf, 1024);
        if (keep)
            store_commit(keep, out);
        total += (long)out;
    }
    deflater_close(&d);
    return total;
}

/* ---------------------------------------------------------------- verification */

/* Inflates every message of s (as a client would: one stream, or a fresh one per message when
 * ctx is 0) with zlib at window wbits and compares with the ticks. Returns 0 when all match. */
static int check_with_zlib(const store *s, int ctx, int wbits, char *why, size_t whycap)
{
    z_stream z = { 0 };
    if (inflateInit2(&z, -wbits) != Z_OK)
        return snprintf(why, whycap, "inflateInit2"), 1;
    uint8_t out[4096];
    int bad = 0;
    for (int i = 0; i < s->count && !bad; i++) {
        size_t len;
        const uint8_t *m = msg_at(s, i, &len);
        if (!ctx)
            inflateReset(&z);
        z.next_out = out;
        z.avail_out = sizeof out;
        z.next_in = (Bytef *)m;
        z.avail_in = (uInt)len;
        int rc = inflate(&z, Z_SYNC_FLUSH);
        if (rc == Z_OK || rc == Z_BUF_ERROR) {
            z.next_in = (Bytef *)sync_tail;
            z.avail_in = 4;
            rc = inflate(&z, Z_SYNC_FLUSH);
        }
        if (rc == Z_STREAM_END && ctx) {
            /* A final block: Petrel restarts with its window; other peers may not. */
            snprintf(why, whycap, "msg %d ends in a final block (Z_STREAM_END) under context takeover", i);
            bad = 1;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
            snprintf(why, whycap, "msg %d: zlib rc %d (%s)", i, rc, z.msg ? z.msg : "");
            bad = 1;
        } else if (sizeof out - z.avail_out != tick_len[i] || memcmp(out, tick[i], tick_len[i])) {
            snprintf(why, whycap, "msg %d: inflated %zu bytes, not the tick", i, sizeof out - z.avail_out);
            bad = 1;
        }
    }
    inflateEnd(&z);
    return bad;
}

/* The same with another engine's inflater (mode ctx/reset/stateless). */
static int check_with(const store *s, const char *engine, const char *mode, char *why, size_t whycap)
{
    spec c;
    memset(&c, 0, sizeof c);
    c.inflate = 1;
    snprintf(c.engine, sizeof c.engine, "%s", engine);
    snprintf(c.mode, sizeof c.mode, "%s", mode);
    inflater f;
    inflater_open(&f, c);
    uint8_t out[4096];
    int bad = 0;
    for (int i = 0; i < s->count && !bad; i++) {
        size_t len;
        const uint8_t *m = msg_at(s, i, &len);
        size_t n = inflate_msg(&f, m, len, out, sizeof out);
        if (n != tick_len[i] || memcmp(out, tick[i], n)) {
            snprintf(why, whycap, "msg %d: %s inflated %zu bytes, not the tick", i, engine, n);
            bad = 1;
        }
    }
    inflater_close(&f);
    return bad;
}

static int msg_valid_tail(const store *s)
{
    /* Each payload must not end in 00 00 ff ff that we forgot to strip (a sign of a missing
     * flush block) — and for the stateful engines the raw output must have ended in it. */
    (void)s;
    return 1;
}

static void verify_deflate(const char *text)
{
    spec c = parse_spec(text);
    store s;
    store_init(&s);
    /* raw output first, to check the trailing 00 00 ff ff is really there */
    deflater d;
    deflater_open(&d, c);
    int tails_ok = 1;
    for (int i = 0; i < NTICKS; i++) {
        uint8_t *room = store_room(&s);
        size_t n = deflate_msg(&d, (const uint8_t *)tick[i], tick_len[i], room, 1024);
        if (strcmp(c.engine, "libdeflate") && strcmp(c.mode, "stateless") && memcmp(room + n, sync_tail, 4))
            tails_ok = 0;
        store_commit(&s, n);
    }
    /* memory held by the stream after use (zlib: the counted allocations) */
    long mem = d.mem;
    deflater_close(&d);
    int ctx = !strcmp(c.mode, "ctx");
    int wbits = !strcmp(c.engine, "zlib") ? c.wbits : (c.hist ? c.hist : 15);
    char why[256] = "";
    /* zlib's raw inflate takes a 256-byte window (8); its raw deflate does not */
    int zbad = check_with_zlib(&s, ctx, wbits, why, sizeof why);
    char why2[256] = "";
    int ibad = check_with(&s, "isal", ctx ? "ctx" : "reset", why2, sizeof why2);
    char why3[256] = "";
    int lbad = ctx ? -1 : check_with(&s, "libdeflate", "stateless", why3, sizeof why3);
    /* the first byte's BFINAL bit: 1 means the message is a final block */
    int finals = 0;
    for (int i = 0; i < s.count; i++)
        finals += s.data[s.off[i]] & 1;
    if (stateless_fallbacks)
        printf("  (%ld of %d stateless messages came out as stored blocks, 0x00 appended)\n", stateless_fallbacks, NTICKS);
    stateless_fallbacks = 0;
    printf("%-48s bytes/msg %6.1f  mem/stream %7ld  tail %s  zlib(w%d,%s) %s  isal %s  libdeflate %s  bfinal-msgs %d%s%s%s%s\n",
        text, (double)s.used / s.count, mem, strcmp(c.engine, "libdeflate") ? (tails_ok ? "ok" : "MISSING") : "n/a",
        wbits, ctx ? "ctx" : "fresh", zbad ? "FAIL" : "ok", ibad ? "FAIL" : "ok",
        lbad < 0 ? "n/a" : lbad ? "FAIL" : "ok", finals, zbad ? "  zlib: " : "", why, ibad ? "  isal: " : "", why2);
    (void)msg_valid_tail;
    free(s.data);
}

static void verify_inflate(const char *text)
{
    spec c = parse_spec(text);
    store s;
    store_init(&s);
    long before = zbytes;
    make_client_frames();
    const store *frames = frames_for(&c);
    inflater f;
    inflater_open(&f, c);
    int bad = -1;
    for (int i = 0; i < NTICKS; i++) {
        size_t len;
        const uint8_t *m = msg_at(frames, i, &len);
        size_t n = inflate_msg(&f, m, len, store_room(&s), 4096);
        store_commit(&s, n);
        if (bad < 0 && (n != tick_len[i] || memcmp(s.data + s.off[i], tick[i], n)))
            bad = i;
    }
    long mem = !strcmp(c.engine, "zlib") ? zbytes - before : f.mem;
    inflater_close(&f);
    printf("%-48s frames %-5s (%.1f bytes/msg)  mem/stream %7ld  byte-exact %s\n", text,
        frames == &client_ctx ? "ctx" : frames == &client_fixed ? "fixed" : "noctx", (double)frames->used / NTICKS, mem,
        bad < 0 ? "ok" : "FAIL");
    free(s.data);
}

/* ---------------------------------------------------------------- cases */

static const char *inflate_cases[] = {
    "inf:zlib:ctx", "inf:zlib:keep", "inf:zlib:reset",
    "inf:isal:ctx", "inf:isal:keep", "inf:isal:reset", "inf:isal:stateless",
    "inf:libdeflate:stateless",
    "inf:zlib:keep1", "inf:zlib:keep-fixed", "inf:zlib:reset-fixed", "inf:isal:reset-fixed", "inf:isal:stateless-fixed",
    "inf:libdeflate:stateless-fixed", NULL,
};

static const char *deflate_cases[] = {
    /* Petrel's settings (level 1, memLevel 8, window 15), both modes; serverDefault is reset */
    "def:zlib:level=1,mem=8,wbits=15,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=15,mode=reset",
    "def:zlib:level=6,mem=8,wbits=15,mode=ctx",
    "def:zlib:level=6,mem=8,wbits=15,mode=reset",
    "def:zlib:level=1,mem=8,wbits=15,strat=fixed,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=15,strat=fixed,mode=reset",
    "def:zlib:level=1,mem=8,wbits=15,strat=huffman,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=15,strat=huffman,mode=reset",
    "def:zlib:level=1,mem=1,wbits=15,mode=reset",
    "def:zlib:level=1,mem=4,wbits=15,mode=reset",
    "def:zlib:level=1,mem=1,wbits=9,mode=reset",
    "def:zlib:level=1,mem=8,wbits=9,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=10,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=11,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=12,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=13,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=14,mode=ctx",
    "def:zlib:level=1,mem=8,wbits=9,mode=reset",
    "def:zlib:level=1,mem=8,wbits=12,mode=reset",
    "def:isal:level=0,mode=ctx",
    "def:isal:level=0,mode=reset",
    "def:isal:level=0,mode=full",
    "def:isal:level=0,mode=stateless",
    "def:isal:level=0,huff=static,mode=ctx",
    "def:isal:level=0,huff=static,mode=reset",
    "def:isal:level=0,huff=static,mode=full",
    "def:isal:level=0,huff=static,mode=stateless",
    "def:isal:level=1,mode=ctx",
    "def:isal:level=1,mode=reset",
    "def:isal:level=1,mode=full",
    "def:isal:level=1,mode=stateless",
    "def:isal:level=1,huff=static,mode=ctx",
    "def:isal:level=2,mode=ctx",
    "def:isal:level=2,mode=reset",
    "def:isal:level=3,mode=ctx",
    "def:isal:level=3,mode=reset",
    "def:isal:level=0,huff=static,hist=9,mode=ctx",
    "def:isal:level=1,hist=9,mode=ctx",
    "def:isal:level=1,hist=12,mode=ctx",
    "def:isal:level=3,hist=9,mode=ctx",
    "def:isal:level=1,hist=8,mode=ctx",
    "def:isal:level=0,huff=static,hist=8,mode=ctx",
    "def:isal:level=1,huff=static,mode=stateless",
    "def:libdeflate:level=1",
    "def:libdeflate:level=6",
    NULL,
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void time_case(const char *text, int n)
{
    spec c = parse_spec(text);
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        if (c.inflate)
            run_inflate(c, n, NULL);
        else
            run_deflate(c, n, NULL);
        double t = (now() - t0) / n * 1e9;
        if (t < best)
            best = t;
    }
    printf("%-48s %8.0f ns/msg (best of 5 x %d)\n", text, best, n);
}

int main(int argc, char **argv)
{
    libdeflate_set_memory_allocator(ld_alloc, free);
    make_ticks();
    const char *cmd = argc > 1 ? argv[1] : "verify";
    if (!strcmp(cmd, "run") && argc > 3) {
        spec c = parse_spec(argv[2]);
        int n = atoi(argv[3]);
        long total = c.inflate ? run_inflate(c, n, NULL) : run_deflate(c, n, NULL);
        printf("%s %d messages, %ld bytes out\n", argv[2], n, total);
        return 0;
    }
    if (!strcmp(cmd, "time") && argc > 2) {
        time_case(argv[2], argc > 3 ? atoi(argv[3]) : 20000);
        return 0;
    }
    if (!strcmp(cmd, "list")) {
        for (const char **p = inflate_cases; *p; p++)
            puts(*p);
        for (const char **p = deflate_cases; *p; p++)
            puts(*p);
        return 0;
    }
    if (!strcmp(cmd, "verify")) {
        make_client_frames();
        double sum = 0;
        for (int i = 0; i < NTICKS; i++)
            sum += (double)tick_len[i];
        printf("corpus: %d ticks, %.1f bytes each on average; first: %s\n", NTICKS, sum / NTICKS, tick[0]);
        printf("client frames (zlib level 6, w15, memLevel 8): ctx %.1f bytes/msg, noctx %.1f bytes/msg\n\n",
            (double)client_ctx.used / NTICKS, (double)client_noctx.used / NTICKS);
        for (const char **p = inflate_cases; *p; p++)
            verify_inflate(*p);
        puts("");
        for (const char **p = deflate_cases; *p; p++)
            verify_deflate(*p);
        return 0;
    }
    fprintf(stderr, "usage: engines verify | run CASE N | time CASE [N] | list\n");
    return 2;
}
