/*
 * libwebsockets echo / fan-out server for Petrel's side-by-side benchmarks.
 * Contract: ../PROTOCOL.md.
 *
 *   lws-echo --port N [--deflate]
 *
 * One service thread on lws's default (poll) event loop. Paths: /sub subscribers, /pub
 * publishes every message to all subscribers (same opcode, nothing echoed), anything else
 * echoes. --deflate offers permessage-deflate through lws_extension_callback_pm_deflate.
 *
 * Sending (lws's rules, lws-write.h and minimal-ws-server-echo):
 *   - lws_write() only from LWS_CALLBACK_SERVER_WRITEABLE; the buffer has LWS_PRE bytes of
 *     headroom, where lws writes the frame header in place.
 *   - Several writes per callback, checking lws_partial_buffered() after each one as
 *     lws-ws-state.h asks ("If you will try to do >1 lws_write call inside a single
 *     WRITEABLE callback, you must check this after every write and bail if set"). lws's
 *     echo example checks lws_send_pipe_choked() instead, which costs a poll() per message.
 *     Up to WRITE_BUDGET bytes per callback, so one busy connection cannot starve the rest.
 *   - Messages larger than CHUNK go out as several frames (LWS_WRITE_NO_FIN, then
 *     LWS_WRITE_CONTINUATION), each small enough for one send() (protocol tx_packet_size).
 *   - With permessage-deflate lws keeps pointing into our buffer while it drains compressed
 *     output over later POLLOUTs (PMDR_HAS_PENDING / tx_draining_ext), and lws 4.1's
 *     lws_send_pipe_choked() does not report that state. So on a deflate connection we write
 *     one frame per WRITEABLE callback (lws does not call us back until the drain is over),
 *     and never move or reuse the bytes of a written frame before the next callback.
 *
 * Queues without per-message malloc: each connection has two growable byte buffers of
 * records (header, LWS_PRE headroom, payload). New messages are appended to `fill`; the
 * writer walks `send`; when `send` is used up it is emptied and swapped with `fill`. A buffer
 * is only appended to (and so only reallocated) while it is `fill`, so bytes handed to
 * lws_write() never move.
 *
 * Echo streams received fragments back without waiting for the whole message (fragments
 * that arrive before the writer gets to them are merged into one record). A publisher
 * reassembles the whole message first, since fragments from two publishers must not
 * interleave on a subscriber.
 */

#include <libwebsockets.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGE (16u << 20)	/* contract: messages up to 16 MiB */
#define CHUNK (64u << 10)	/* largest frame we hand to lws_write() */
#define RX_CHUNK (64u << 10)	/* lws delivers received payload in pieces up to this */
#define WRITE_BUDGET (512u << 10) /* bytes written per WRITEABLE callback at most */
#define SHRINK_ABOVE (4u << 20)	/* give back queue buffers that grew past this once drained */

enum role { ROLE_ECHO, ROLE_SUB, ROLE_PUB };

/* Record flags. */
#define REC_BINARY 1
#define REC_FIRST 2
#define REC_FINAL 4

struct rec {
	uint64_t len;		/* payload bytes */
	uint32_t flags;
	uint32_t pad;
};
/* A record is: struct rec, LWS_PRE bytes of headroom, payload, padding to 16. */
#define REC_PAYLOAD_OFF (sizeof(struct rec) + LWS_PRE)

struct buf {
	unsigned char *p;
	size_t len, cap;
};

struct pss {
	enum role role;
	int pmd;		/* permessage-deflate negotiated */
	size_t sub_slot;	/* index in subs[] + 1, or 0 when not subscribed */
	/* outgoing */
	struct buf fill;	/* appended to */
	struct buf send;	/* being written */
	size_t rd;		/* offset of the record being written in send */
	size_t off;		/* payload bytes of that record already written */
	size_t open_rec;	/* offset in fill of the echo record still growing, + 1; 0: none */
	/* incoming */
	int in_msg;		/* inside a message (seen its first fragment) */
	int rx_binary;
	struct buf rx;		/* publisher's reassembly buffer */
};

static struct lws **subs;
static size_t nsubs, subs_cap;
static volatile sig_atomic_t interrupted;
static struct lws_context *context;

static size_t
rec_size(size_t len)
{
	return (REC_PAYLOAD_OFF + len + 15) & ~(size_t)15;
}

static int
buf_reserve(struct buf *b, size_t extra)
{
	size_t cap;
	unsigned char *p;

	if (b->len + extra <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 4096;
	while (cap < b->len + extra)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

static void
buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Queue one record on a connection and ask for a WRITEABLE callback. */
static int
enqueue(struct lws *wsi, struct pss *pss, const void *data, size_t len, uint32_t flags)
{
	size_t size = rec_size(len);
	struct rec *r;

	if (buf_reserve(&pss->fill, size))
		return -1;
	r = (struct rec *)(pss->fill.p + pss->fill.len);
	r->len = len;
	r->flags = flags;
	r->pad = 0;
	if (len)
		memcpy((unsigned char *)r + REC_PAYLOAD_OFF, data, len);
	pss->fill.len += size;
	lws_callback_on_writable(wsi);
	return 0;
}

/*
 * Echo one received fragment. While the message's latest record is still in `fill` (the
 * writer has not reached it) the fragment is appended to that record, so a message that
 * arrives in many pieces usually goes back as one or a few frames.
 */
static int
enqueue_echo(struct lws *wsi, struct pss *pss, const void *data, size_t len, int first,
	     int final)
{
	struct rec *r;
	size_t at;

	if (first || !pss->open_rec) {
		at = pss->fill.len;
		if (enqueue(wsi, pss, data, len, (pss->rx_binary ? REC_BINARY : 0) |
			    (first ? REC_FIRST : 0) | (final ? REC_FINAL : 0)))
			return -1;
		pss->open_rec = final ? 0 : at + 1;
		return 0;
	}

	at = pss->open_rec - 1;
	r = (struct rec *)(pss->fill.p + at);
	/* the open record is the last one in fill: grow it in place */
	if (buf_reserve(&pss->fill, rec_size(r->len + len) - rec_size(r->len)))
		return -1;
	r = (struct rec *)(pss->fill.p + at);
	if (len)
		memcpy((unsigned char *)r + REC_PAYLOAD_OFF + r->len, data, len);
	r->len += len;
	pss->fill.len = at + rec_size(r->len);
	if (final) {
		r->flags |= REC_FINAL;
		pss->open_rec = 0;
	}
	lws_callback_on_writable(wsi);
	return 0;
}

static int
has_pending(const struct pss *pss)
{
	return pss->rd < pss->send.len || pss->fill.len;
}

static int
on_writeable(struct lws *wsi, struct pss *pss)
{
	size_t written = 0;

	for (;;) {
		struct rec *r;
		unsigned char *payload;
		size_t n;
		int first, final, flags;

		if (pss->rd == pss->send.len) {
			struct buf t;

			if (!pss->fill.len)
				return 0;
			/*
			 * Everything in send went out: it becomes the next fill. On a deflate
			 * connection we only get here at the start of a callback, so lws is
			 * done with those bytes.
			 */
			t = pss->send;
			pss->send = pss->fill;
			pss->fill = t;
			pss->fill.len = 0;
			pss->open_rec = 0;	/* later fragments start a new record */
			if (pss->fill.cap > SHRINK_ABOVE)
				buf_free(&pss->fill);
			pss->rd = pss->off = 0;
		}

		r = (struct rec *)(pss->send.p + pss->rd);
		payload = (unsigned char *)r + REC_PAYLOAD_OFF;
		if (pss->pmd && !r->len &&
		    (r->flags & (REC_FIRST | REC_FINAL)) == (REC_FIRST | REC_FINAL)) {
			/*
			 * lws 4.1.6's permessage-deflate aborts the process when asked to
			 * send an empty message after another message ("FAIL want to trim
			 * out length 0", an assert): zlib has nothing to flush. Send it
			 * uncompressed instead (RSV1 clear, allowed by RFC 7692 section 6)
			 * as a raw 2-byte frame, which leaves the deflate stream alone.
			 */
			payload[-2] = 0x80 | ((r->flags & REC_BINARY) ? 2 : 1);
			payload[-1] = 0;
			if (lws_write(wsi, payload - 2, 2, LWS_WRITE_HTTP) < 2)
				return -1;
			pss->rd += rec_size(0);
			if (!has_pending(pss))
				continue;
			lws_callback_on_writable(wsi);
			return 0;
		}
		n = r->len - pss->off;
		if (n > CHUNK)
			n = CHUNK;
		first = (r->flags & REC_FIRST) && !pss->off;
		final = (r->flags & REC_FINAL) && pss->off + n == r->len;
		flags = lws_write_ws_flags((r->flags & REC_BINARY) ? LWS_WRITE_BINARY :
					   LWS_WRITE_TEXT, first, final);
		/*
		 * For a later chunk of a big record lws writes the frame header into the
		 * LWS_PRE bytes just before it: payload of the previous chunk, which lws has
		 * already sent or copied (this only happens without deflate, see above).
		 */
		if (lws_write(wsi, payload + pss->off, n, (enum lws_write_protocol)flags) < (int)n)
			return -1;
		pss->off += n;
		written += n;
		if (pss->off == r->len) {
			pss->rd += rec_size(r->len);
			pss->off = 0;
		}

		if (!has_pending(pss))
			continue;	/* recycles the buffers and returns */
		if (pss->pmd || lws_partial_buffered(wsi) || written >= WRITE_BUDGET) {
			lws_callback_on_writable(wsi);
			return 0;
		}
	}
}

static void
sub_add(struct lws *wsi, struct pss *pss)
{
	if (nsubs == subs_cap) {
		size_t cap = subs_cap ? subs_cap * 2 : 64;
		struct lws **p = realloc(subs, cap * sizeof(*p));

		if (!p)
			return;
		subs = p;
		subs_cap = cap;
	}
	subs[nsubs++] = wsi;
	pss->sub_slot = nsubs;
}

static void
sub_remove(struct pss *pss)
{
	size_t i;

	if (!pss->sub_slot)
		return;
	i = pss->sub_slot - 1;
	subs[i] = subs[--nsubs];
	if (i < nsubs)
		((struct pss *)lws_wsi_user(subs[i]))->sub_slot = i + 1;
	pss->sub_slot = 0;
}

static int
callback_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
	    size_t len)
{
	struct pss *pss = (struct pss *)user;
	char uri[256];
	int first, final;
	size_t i;

	switch (reason) {
	case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
		/* Called per extension lws is about to accept for this connection. */
		if (pss && in && !strcmp((const char *)in, "permessage-deflate"))
			pss->pmd = 1;
		return 0;

	case LWS_CALLBACK_ESTABLISHED:
		pss->role = ROLE_ECHO;
		if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) > 0) {
			char *q = strchr(uri, '?');

			if (q)
				*q = '\0';
			if (!strcmp(uri, "/sub"))
				pss->role = ROLE_SUB;
			else if (!strcmp(uri, "/pub"))
				pss->role = ROLE_PUB;
		}
		if (pss->role == ROLE_SUB)
			sub_add(wsi, pss);
		if (pss->pmd) {
			/*
			 * lws's deflate buffers default to 1 KiB (2^10): a 1 MiB message
			 * would go out as ~1000 frames and come in as ~1000 RECEIVE calls.
			 * Use 64 KiB like the rest of this server (options "only user code
			 * can set", lws-ws-ext.h / extension-permessage-deflate.c).
			 */
			lws_set_extension_option(wsi, "permessage-deflate", "rx_buf_size", "16");
			lws_set_extension_option(wsi, "permessage-deflate", "tx_buf_size", "16");
		}
		return 0;

	case LWS_CALLBACK_RECEIVE:
		first = !pss->in_msg;
		final = lws_is_final_fragment(wsi);
		if (first)
			pss->rx_binary = lws_frame_is_binary(wsi);
		pss->in_msg = !final;

		switch (pss->role) {
		case ROLE_ECHO:
			return enqueue_echo(wsi, pss, in, len, first, final);
		case ROLE_SUB:
			return 0;	/* subscribers only listen */
		case ROLE_PUB:
			if (pss->rx.len + len > MAX_MESSAGE) {
				lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, NULL, 0);
				return -1;
			}
			if (len) {
				if (buf_reserve(&pss->rx, len))
					return -1;
				memcpy(pss->rx.p + pss->rx.len, in, len);
				pss->rx.len += len;
			}
			if (!final)
				return 0;
			for (i = 0; i < nsubs; i++)
				if (enqueue(subs[i], lws_wsi_user(subs[i]), pss->rx.p,
					    pss->rx.len, REC_FIRST | REC_FINAL |
					    (pss->rx_binary ? REC_BINARY : 0)))
					return -1;
			if (pss->rx.cap > SHRINK_ABOVE)
				buf_free(&pss->rx);
			pss->rx.len = 0;
			return 0;
		}
		return 0;

	case LWS_CALLBACK_SERVER_WRITEABLE:
		return on_writeable(wsi, pss);

	case LWS_CALLBACK_CLOSED:
		sub_remove(pss);
		buf_free(&pss->fill);
		buf_free(&pss->send);
		buf_free(&pss->rx);
		return 0;

	default:
		break;
	}

	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
	/* First protocol: used when the client names none. */
	{
		.name = "petrel-bench",
		.callback = callback_ws,
		.per_session_data_size = sizeof(struct pss),
		.rx_buffer_size = RX_CHUNK,
		.tx_packet_size = CHUNK + LWS_PRE,
	},
	{ NULL, NULL, 0, 0, 0, NULL, 0 }	/* terminator */
};

static const struct lws_extension extensions[] = {
	{
		"permessage-deflate",
		lws_extension_callback_pm_deflate,
		"permessage-deflate; client_no_context_takeover; client_max_window_bits"
	},
	{ NULL, NULL, NULL }
};

static void
on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
	if (context)
		lws_cancel_service(context);
}

int
main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	int port = 9001, deflate = 0, i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--deflate"))
			deflate = 1;
		else {
			fprintf(stderr, "usage: %s --port N [--deflate]\n", argv[0]);
			return 2;
		}
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

	memset(&info, 0, sizeof(info));
	info.port = port;
	info.iface = "127.0.0.1";
	info.protocols = protocols;
	if (deflate)
		info.extensions = extensions;
	info.count_threads = 1;
	info.pt_serv_buf_size = RX_CHUNK;	/* per-thread read buffer (default 4 KiB) */
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;

	context = lws_create_context(&info);
	if (!context) {
		fprintf(stderr, "lws-echo: lws_create_context failed\n");
		return 1;
	}
	printf("lws-echo listening on 127.0.0.1:%d%s\n", port,
	       deflate ? " (permessage-deflate)" : "");
	fflush(stdout);

	while (!interrupted)
		if (lws_service(context, 0) < 0)
			break;

	lws_context_destroy(context);
	free(subs);
	return 0;
}
