/*
 * petrel.h — the C interface to Petrel, an embeddable WebSocket endpoint (RFC 6455, RFC 7692).
 *
 * CONVENTIONS
 *
 * Errors.    Every function that can fail returns a petrel_status: PETREL_OK (0) or a negative
 *            code from the enum below, grouped in bands: -1xx would-block / backpressure,
 *            -2xx protocol and handshake, -3xx bad argument or state, -5xx resource or limit,
 *            -6xx I/O. Numbers are never reused. They are macros of type int (petrel_status). petrel_strerror() names any code.
 *            Outputs (parameters named *_out) are written only when PETREL_OK is returned, with
 *            one exception: PETREL_E_BUFFER_TOO_SMALL also writes *len_out (the size needed),
 *            and petrel_last_refusal its *status_out. Each function's "Returns:" line lists
 *            every status it can return.
 *
 * Ownership. 1. A pointer handed to a callback is borrowed until the callback returns: copy what
 *               you keep.
 *            2. Every send call copies the payload before it returns; the caller keeps its buffer.
 *            3. A handle returned through **_out belongs to the caller, who releases it exactly
 *               once with the matching _destroy; _destroy(NULL) does nothing. Never free() Petrel
 *               memory.
 *            4. Strings are UTF-8 and need not be NUL-terminated where a length is passed.
 *            5. Strings in config structs and arguments are copied before the call returns
 *               (the caller may free them then); `userdata` and `conn_data` are not looked
 *               at, only handed back, and must stay valid while callbacks can receive them.
 *
 * Threads.   Every callback for a connection runs on that connection's loop thread, never
 *            concurrently with another callback for the same connection. Callbacks of different
 *            connections may run at the same time on different loop threads.
 *            petrel_conn_*, petrel_server_publish and petrel_server_stop are safe from any thread.
 *            With queue_events = 1, open/message/close/drain are not callbacks but records a
 *            thread of the host's pulls with petrel_server_next_events.
 *            Every other call is "one thread at a time per handle". A petrel_session is not
 *            thread-safe. petrel_server_destroy from inside a callback returns
 *            PETREL_E_WRONG_THREAD rather than deadlocking.
 *
 * Ids.       Connections are named by a uint64_t id that is never reused within the process. A
 *            stale id returns PETREL_E_UNKNOWN_CONNECTION. Each connection also carries a
 *            pointer of the caller's (conn_data: set by petrel_upgrade_accept, in on_open, or
 *            with petrel_conn_set_data), passed to every callback of the connection, on_close
 *            last, so that C code needs no table from id to state. With queue_events = 1 the
 *            records carry only the id: read the pointer with petrel_conn_data.
 *
 * Versions.  PETREL_VERSION_* below name the header; petrel_version() names the library.
 *            Config structs carry their own size (set by the _init function), so that a newer
 *            library reads only the fields an older caller knew about. The ABI of soname
 *            libpetrel.so.0 is stable from 0.2.0: functions carry the symbol version PETREL_0
 *            (later additions, a node of their own), signatures and struct layouts do not
 *            change, structs with a size field only grow at the end (docs/c-api.md).
 */
#ifndef PETREL_H
#define PETREL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PETREL_VERSION_MAJOR 0
#define PETREL_VERSION_MINOR 2
#define PETREL_VERSION_PATCH 0
/** MAJOR * 10000 + MINOR * 100 + PATCH. */
#define PETREL_VERSION_NUMBER (PETREL_VERSION_MAJOR * 10000 + PETREL_VERSION_MINOR * 100 + PETREL_VERSION_PATCH)

/** A result: PETREL_OK or a negative error code. */
typedef int32_t petrel_status;

#define PETREL_OK 0
/* -1xx: try again later */
#define PETREL_E_AGAIN (-101)                /* nothing to return now (no event, no message yet) */
#define PETREL_E_BACKPRESSURE (-102)         /* not queued: the connection's send buffer is over its limit; wait for on_drain */
#define PETREL_E_TIMEOUT (-103)              /* a blocking call's timeout expired */
#define PETREL_E_REPLAY_GONE (-104)          /* the replay ring no longer holds the messages after that id */
#define PETREL_E_RECONNECTING (-105)         /* not sent: the client is between connections (reconnect = 1) */
/* -2xx: protocol (the peer broke RFC 6455 / RFC 7692); the connection was failed with a close code */
#define PETREL_E_RESERVED_OPCODE (-201)      /* close 1002 */
#define PETREL_E_RESERVED_BITS (-202)        /* close 1002 */
#define PETREL_E_CONTROL_TOO_LONG (-203)     /* close 1002 */
#define PETREL_E_FRAGMENTED_CONTROL (-204)   /* close 1002 */
#define PETREL_E_LENGTH_TOP_BIT (-205)       /* close 1002 */
#define PETREL_E_UNMASKED_FRAME (-206)       /* close 1002 */
#define PETREL_E_MASKED_FRAME (-207)         /* close 1002 */
#define PETREL_E_UNEXPECTED_CONTINUATION (-208) /* close 1002 */
#define PETREL_E_EXPECTED_CONTINUATION (-209) /* close 1002 */
#define PETREL_E_CLOSE_PAYLOAD (-210)        /* close 1002: a 1-byte close payload */
#define PETREL_E_CLOSE_CODE (-211)           /* close 1002: a close code that may not be sent */
#define PETREL_E_INVALID_UTF8 (-212)         /* close 1007 */
#define PETREL_E_CLOSE_REASON_UTF8 (-213)    /* close 1007 */
#define PETREL_E_FRAME_TOO_BIG (-214)        /* close 1009 */
#define PETREL_E_MESSAGE_TOO_BIG (-215)      /* close 1009 */
#define PETREL_E_INFLATE (-216)              /* close 1002: invalid compressed data */
#define PETREL_E_ABNORMAL_CLOSURE (-217)     /* 1006: the transport ended without a closing handshake */
/* -24x: a server refused an opening handshake (the HTTP status it answered) */
#define PETREL_E_HS_MALFORMED (-240)         /* 400 */
#define PETREL_E_HS_TOO_LARGE (-241)         /* 431 */
#define PETREL_E_HS_TOO_MANY_HEADERS (-242)  /* 431 */
#define PETREL_E_HS_NOT_GET (-243)           /* 400 */
#define PETREL_E_HS_HTTP_VERSION (-244)      /* 400 */
#define PETREL_E_HS_HOST (-245)              /* 400 */
#define PETREL_E_HS_NOT_UPGRADE (-246)       /* 426 */
#define PETREL_E_HS_KEY (-247)               /* 400 */
#define PETREL_E_HS_VERSION (-248)           /* 426 */
#define PETREL_E_HS_ORIGIN (-249)            /* 403 */
#define PETREL_E_HS_EXTENSIONS (-250)        /* 400 */
#define PETREL_E_HS_SUBPROTOCOLS (-251)      /* 400 */
#define PETREL_E_HS_UNAVAILABLE (-252)       /* 503 */
#define PETREL_E_HS_TIMEOUT (-253)           /* 408 */
/* -26x: a client rejected a server's handshake response */
#define PETREL_E_HS_BAD_RESPONSE (-260)     
#define PETREL_E_HS_RESPONSE_TOO_LARGE (-261)
#define PETREL_E_HS_STATUS (-262)            /* the server answered with a status other than 101 */
#define PETREL_E_HS_NO_UPGRADE (-263)       
#define PETREL_E_HS_NO_CONNECTION (-264)    
#define PETREL_E_HS_ACCEPT (-265)            /* Sec-WebSocket-Accept does not match */
#define PETREL_E_HS_SUBPROTOCOL (-266)       /* a subprotocol that was not offered */
#define PETREL_E_HS_EXTENSION (-267)         /* an extension that was not offered */
#define PETREL_E_HS_EXTENSION_PARAMS (-268) 
/* -3xx: bad argument or state */
#define PETREL_E_NULL (-301)                 /* a required pointer was NULL */
#define PETREL_E_INVALID_ARGUMENT (-302)     /* a value out of range, or a string that is not valid UTF-8 */
#define PETREL_E_UNKNOWN_CONNECTION (-303)   /* no open connection has this id (it closed, or never existed) */
#define PETREL_E_STOPPED (-304)              /* the server is stopped, or was never started */
#define PETREL_E_WRONG_THREAD (-305)         /* not allowed from this thread (e.g. destroy from a callback) */
#define PETREL_E_CLOSED (-306)               /* the connection is closing or closed */
#define PETREL_E_STATE (-307)                /* not allowed in the current state (e.g. start twice) */
#define PETREL_E_BUFFER_TOO_SMALL (-308)     /* the caller's buffer is too small; *len_out says how much is needed */
#define PETREL_E_CONFIG_SIZE (-309)          /* a config struct's size field is not set (call its _init) */
#define PETREL_E_SENDING_CLOSED (-320)       /* the session sent or received a close frame: no more data */
#define PETREL_E_CONTROL_PAYLOAD (-321)      /* a ping or pong payload over 125 bytes */
#define PETREL_E_BAD_CLOSE_CODE (-322)       /* close codes allowed: 1000-1003, 1007-1014, 3000-4999 */
#define PETREL_E_CLOSE_REASON_LONG (-323)    /* a close reason over 123 bytes */
#define PETREL_E_BAD_OPCODE (-324)           /* not a text, binary or continuation opcode */
#define PETREL_E_NO_MESSAGE (-325)           /* no fragmented message is in progress */
#define PETREL_E_MESSAGE_IN_PROGRESS (-326)  /* a fragmented message is in progress */
/* -5xx: resources and limits */
#define PETREL_E_NOMEM (-501)               
#define PETREL_E_TOO_BIG (-502)              /* a message over the configured maximum size */
/* -6xx: I/O */
#define PETREL_E_RESOLVE (-601)              /* the host name could not be resolved */
#define PETREL_E_SOCKET (-602)              
#define PETREL_E_BIND (-603)                 /* the address is in use or not ours */
#define PETREL_E_CONNECT (-604)              /* connection refused or unreachable */
#define PETREL_E_CONNECT_TIMEOUT (-605)     
#define PETREL_E_URL (-606)                  /* not a ws:// URL (or wss:// without TLS support), or not an engine_url */
#define PETREL_E_THREAD (-607)               /* a loop thread could not be started */
#define PETREL_E_HANDSHAKE (-608)            /* the opening handshake failed (petrel_last_error says why) */
#define PETREL_E_TLS (-609)                  /* TLS: an untrusted, expired or misnamed certificate, or a bad TLS file */
#define PETREL_E_PROXY (-610)                /* the proxy refused (HTTP 407, 403, 502...; a SOCKS reply code) or failed */
#define PETREL_E_ENGINE (-611)               /* the pub/sub engine (Redis) was unreachable, refused or timed out (docs/cluster.md) */

/** Message kinds. */
#define PETREL_TEXT 1
#define PETREL_BINARY 2
/**
 * OR'ed into petrel_server_publish's kind: the payload carries the six bytes {{id}} where its own
 * event id goes, and the engine writes the id there in decimal (first occurrence) before any
 * subscriber or the history sees it. With several servers on one Redis, only Redis knows the
 * next id: this is how a payload such as {"id":{{id}},...} still holds it. (A library without
 * it answers PETREL_E_INVALID_ARGUMENT.)
 */
#define PETREL_STAMP_ID 0x100

/**
 * Returns the library's version, "MAJOR.MINOR.PATCH". Never NULL; static storage.
 * Thread: any.
 */
const char *petrel_version(void);

/** Returns PETREL_VERSION_NUMBER of the library (compare with the header's). Thread: any. */
uint32_t petrel_version_number(void);

/**
 * Describes a status code. Never NULL; static storage. Unknown codes get "unknown error".
 * Thread: any.
 */
const char *petrel_strerror(petrel_status status);

/* ------------------------------------------------------------------------------------------- */
/* Server                                                                                       */
/* ------------------------------------------------------------------------------------------- */

typedef struct petrel_server petrel_server;

/** What happens to a topic subscriber that cannot keep up (docs/runtime.md, slow consumers). */
#define PETREL_SLOW_CLOSE 0       /* close it with 1008 */
#define PETREL_SLOW_DROP_OLDEST 1
#define PETREL_SLOW_DROP_NEWEST 2
#define PETREL_SLOW_COALESCE 3    /* keep only the newest message per publish key */

typedef struct petrel_server_config {
    size_t size;                  /* set by petrel_server_config_init */
    const char *host;             /* default "0.0.0.0"; "::" for IPv6 */
    uint16_t port;                /* default 8080; 0 picks a free port (see petrel_server_port) */
    uint32_t threads;             /* loop threads; 0 = one per core */
    uint32_t max_connections;     /* default 100000; over it requests get 503 */
    uint64_t max_message_size;    /* default 16 MiB, at most 1 TiB; larger messages close with 1009 */
    uint64_t max_frame_size;      /* default 16 MiB */
    uint64_t max_backpressure;    /* default 1 MiB of queued output per connection */
    uint32_t handshake_timeout_ms; /* default 10000 (0 expires at the next timer tick, about 100 ms) */
    uint32_t idle_timeout_ms;     /* default 0 (never) */
    uint32_t ping_interval_ms;    /* default 0 (never) */
    uint32_t pong_timeout_ms;     /* default 10000; a missed pong closes with 1011 */
    uint32_t close_timeout_ms;    /* default 5000 */
    int32_t compression;          /* default 1: accept permessage-deflate, keeping no compression context
                                     between messages (no memory held between them); 2: keep it
                                     (better ratio, ~300 KiB per connection that sends); 0: refuse */
    int32_t close_on_backpressure; /* default 0: sends past the limit return PETREL_E_BACKPRESSURE; 1: close with 1008 */
    const char *subprotocols;     /* comma-separated, in order of preference; NULL for none */
    const char *allowed_origins;  /* comma-separated; NULL allows any Origin */
    int32_t topic_slow_consumer;  /* PETREL_SLOW_*, default PETREL_SLOW_CLOSE */
    uint32_t topic_max_queued;    /* default 1024 messages queued per slow subscriber */
    uint32_t topic_replay;        /* default 0: messages kept per topic for replay */
    const char *static_root;      /* NULL (default): no static files; else a folder served to GET/HEAD
                                     requests no other route took ("/" is index.html); must exist */
    const char *event_stream_paths; /* comma-separated paths where a GET opens a Server-Sent Events
                                     stream (see "Event streams" below); NULL for none */
    uint64_t max_request_body;    /* default 65536: larger plain-HTTP bodies get 413 */
    const char *tls_cert_file;    /* NULL (default): plain TCP; else TLS with this PEM chain (leaf first) */
    const char *tls_key_file;     /* the PEM private key (required with tls_cert_file) */
    const char *tls_client_ca_file; /* NULL: no client certificates; else required and checked against it */
    const char *tls_sni_certificates; /* NULL, or more certificates by the name clients send (SNI):
                                     "name,chain.pem,key.pem;*.example.com,chain2.pem,key2.pem" */
    int32_t queue_events;         /* default 0: on_open/on_message/on_close/on_drain run on the loop
                                     threads. 1: those four are not called; their events are queued
                                     for petrel_server_next_events (see there) */
    uint64_t event_queue_bytes;   /* with queue_events: the queue's size, default 16 MiB (at least 64 KiB,
                                     at most 1 TiB); when it is full, loop threads wait for room */
    const char *engine_url;       /* NULL or "" (default): event ids and replay in this process. Else
                                     "redis://host[:port]" or a Unix socket path: topics shared with
                                     every server on that Redis (docs/cluster.md); petrel_server_start
                                     fails with PETREL_E_ENGINE if it cannot be reached */
    uint32_t engine_timeout_ms;   /* default 2000: connecting to Redis, or one reply, at most this long */
    uint64_t topic_stream_capacity; /* default 10000: with Redis, about how many messages each topic's
                                     stream keeps (resume from older ids gets PETREL_E_REPLAY_GONE) */
    const char *stomp_paths;      /* NULL (default): no STOMP. Else STOMP 1.2 over WebSocket (docs/stomp.md)
                                     for every upgrade to one of these comma-separated paths ("" for
                                     none) and for every client that offers the subprotocol v12.stomp,
                                     v11.stomp or v10.stomp. Such a connection's frames go to on_stomp
                                     and on_stomp_ack, never to on_message; topics reach it as MESSAGE
                                     frames of its subscriptions */
    uint32_t stomp_heart_beat_ms; /* default 10000: the heart-beat period offered both ways (0: none); a
                                     client that agreed to send them is closed after 3 periods of
                                     silence, and not before 65 s */
    uint32_t stomp_max_unacked;   /* default 0 (no cap): messages a subscription in a client ack mode may
                                     have unacknowledged; more wait for ACKs (up to topic_max_queued) */
    uint64_t stomp_max_body;      /* default 1 MiB (at most 1 GiB): a larger frame body gets an ERROR
                                     frame and a close (1009) */
    uint32_t keep_alive_timeout_ms; /* default 5000: how long a connection waits for its next plain HTTP
                                     request once a response is out (HTTP/1.1 keep-alive; at most 1000
                                     requests per connection); 0 closes after each response */
    const char *cors_origins;     /* NULL (default): no CORS. Else comma-separated origins
                                     ("https://app.example.com", "*" for any) whose pages may read the
                                     HTTP routes, static files and event streams: they get
                                     Access-Control-Allow-Origin, OPTIONS preflights are answered 204,
                                     and a request from any other origin (not the server's own) gets 403 */
    int32_t cors_credentials;     /* default 0; 1: Access-Control-Allow-Credentials: true (never with "*") */
    uint32_t sse_retry_ms;        /* default 1000: the retry: field sent as an event stream opens, the
                                     browser's wait before it reconnects (0: none, the browser's ~3 s) */
    uint32_t sse_padding;         /* default 0: bytes of comment sent as an event stream opens, for
                                     proxies that hold small responses (2048 covers common ones; at most 65536) */
    const char *access_log_file;  /* NULL (default): no access log, unless on_access_log is set. Else a
                                     line per plain request, upgrade and close of an upgraded connection
                                     is appended to this file (created 0644; see petrel_access_log_entry);
                                     petrel_server_start fails with PETREL_E_INVALID_ARGUMENT if it cannot be
                                     opened.
                                     Not with on_access_log */
    int32_t proxy_protocol;       /* default 0; 1: every connection starts with a PROXY protocol header
                                     (version 1 or 2, from HAProxy, nginx's proxy_protocol or a cloud
                                     balancer) whose source address is the client's; a connection
                                     without one is closed. Only where nothing else can connect */
    const char *trusted_proxies;  /* NULL (default): none. Else comma-separated addresses and CIDR
                                     blocks ("127.0.0.1, 10.0.0.0/8, ::1") whose Forwarded or
                                     X-Forwarded-For header is believed: the client address
                                     (petrel_http_request.client, petrel_conn_client_address, the
                                     access log) is then the one the header gives; a bad entry makes
                                     petrel_server_start fail with PETREL_E_INVALID_ARGUMENT */
    int32_t trusted_proxy_header; /* which header trusted_proxies write, the only one read: 0 (default)
                                     X-Forwarded-For (nginx, cloud balancers), 1 Forwarded (RFC 7239) */
    int32_t heartbeat_messages;   /* default 0; 1: with ping_interval_ms, each ping also sends an empty
                                     text message, and an event stream gets an empty data: event
                                     instead of its keepalive comment: heartbeats a browser script
                                     sees (petrel.js finds dead connections by silence). Not on STOMP */
} petrel_server_config;

/**
 * One access log entry, as on_access_log sees it. Every pointer is borrowed until on_access_log
 * returns; strings are NUL-terminated.
 */
typedef struct petrel_access_log_entry {
    const char *event;            /* "request" (a plain request answered), "upgrade" (101, or an event
                                     stream opened) or "close" (an upgraded connection ended) */
    uint64_t time_ms;             /* wall clock, milliseconds since 1970 (UTC) */
    const char *peer;             /* the client's address, "address:port" */
    uint64_t conn;                /* the connection's id */
    const char *method;           /* "-" when the request did not parse */
    const char *path;             /* the path without query, or "-" */
    int32_t status;               /* the HTTP status; for a close, the WebSocket close code (0 for an
                                     event stream) */
    const char *transport;        /* "http", "websocket", "stomp" or "sse" */
    uint64_t bytes_in;            /* bytes read for the request; for a close, since the upgrade */
    uint64_t bytes_out;           /* bytes of the response; for a close, written since the upgrade */
    uint64_t duration_ms;         /* from the request's start to its response; for a close, since the upgrade */
    const char *line;             /* the entry as access_log_file writes it, without the newline */
} petrel_access_log_entry;

/**
 * A plain HTTP request (not a WebSocket upgrade), as on_http sees it. Every pointer is borrowed
 * until on_http returns; strings are NUL-terminated UTF-8 (path and query as sent, not decoded).
 */
typedef struct petrel_http_request {
    const char *method;           /* "GET", "POST", ... */
    const char *path;             /* the target up to '?' */
    const char *query;            /* the target after '?', or "" */
    const uint8_t *body;          /* the body (Content-Length bytes), or NULL when empty */
    size_t body_len;
    const char *peer;             /* "address:port" of the client */
    uint64_t conn;                /* the connection's id (in on_upgrade: the id it will have once open) */
    void *internal_;              /* the library's */
    const char *client;           /* the client's address: peer, or what a PROXY header or a trusted
                                     proxy's Forwarded/X-Forwarded-For said (see trusted_proxies) */
} petrel_http_request;

/** Fills *config with the defaults above and sets its size. Thread: any. */
void petrel_server_config_init(petrel_server_config *config);

/**
 * A STOMP frame that needs the application's word, as on_stomp sees it. Every pointer is borrowed
 * until on_stomp returns; strings are NUL-terminated UTF-8 ("" when the frame has no such value).
 */
typedef struct petrel_stomp_frame {
    const char *command;          /* "CONNECT" (also for the STOMP command), "SUBSCRIBE" or "SEND" */
    const char *destination;      /* SUBSCRIBE and SEND: the destination header */
    const char *subscription;     /* SUBSCRIBE: its id */
    const char *ack;              /* SUBSCRIBE: "auto", "client" or "client-individual" */
    const char *login;            /* CONNECT: the login, passcode and host headers */
    const char *passcode;
    const char *host;
    const uint8_t *body;          /* SEND: the body (it may contain NUL octets), or NULL when empty */
    size_t body_len;
    void *internal_;              /* the library's */
} petrel_stomp_frame;

/**
 * Server callbacks. Each is optional (NULL). `userdata` is passed back first.
 * Thread: the connection's loop thread. Pointers are borrowed until the callback returns.
 */
typedef struct petrel_server_callbacks {
    size_t size;                  /* set by petrel_server_callbacks_init */
    void *userdata;
    /**
     * A connection completed its opening handshake. Request details: petrel_conn_path and friends.
     * *conn_data holds the pointer petrel_upgrade_accept attached (NULL if none); store your own
     * per-connection pointer there (e.g. a malloc'd struct): every later callback of this
     * connection receives it as conn_data, on_close last of all, where you free it.
     */
    void (*on_open)(void *userdata, petrel_server *server, uint64_t conn, void **conn_data);
    /** A complete message: kind is PETREL_TEXT (valid UTF-8) or PETREL_BINARY. */
    void (*on_message)(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, int32_t kind,
                       const uint8_t *data, size_t len);
    /**
     * The connection is gone: the peer's close code, or the one we failed it with, or 1006. The
     * last callback of a connection whose on_open ran (every accepted upgrade): free conn_data
     * here. After it returns the id is unknown and conn_data is not read again.
     */
    void (*on_close)(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, uint16_t code,
                     const char *reason, size_t reason_len);
    /** The send buffer, which was over its limit, has been written out. */
    void (*on_drain)(void *userdata, petrel_server *server, uint64_t conn, void *conn_data);
    /**
     * A plain HTTP request. Answer it with petrel_http_respond before returning; if you do not,
     * the server goes on: an event-stream path opens a stream, then static files, else 426 (404
     * when static_root is set). The connection is kept for the client's next request
     * (keep_alive_timeout_ms) unless the request asked to close; a HEAD request's answer goes
     * out without its body. request->client is the client's address (see trusted_proxies).
     */
    void (*on_http)(void *userdata, petrel_server *server, const petrel_http_request *request);
    /**
     * The accept hook: a WebSocket upgrade request (already valid per RFC 6455 and the
     * allowed_origins list), before it is answered. Read it with petrel_http_header (Cookie,
     * Authorization, Origin...) and petrel_http_query_param; refuse it with
     * petrel_http_respond (e.g. 401, 403), or accept it, optionally choosing the subprotocol and
     * attaching a per-connection pointer, with petrel_upgrade_accept. Doing neither accepts
     * it. A refusal is sent with the status, content_type and body as given, then the
     * connection closes; a client of this library reads them with petrel_last_refusal.
     */
    void (*on_upgrade)(void *userdata, petrel_server *server, const petrel_http_request *request);
    /**
     * STOMP (stomp_paths): a CONNECT, SUBSCRIBE or SEND. Read it from *frame and with
     * petrel_stomp_header; answer with petrel_stomp_allow or petrel_stomp_refuse before returning.
     * Without an answer (or with on_stomp NULL): CONNECT is accepted; SUBSCRIBE to "/topic/NAME"
     * reads topic NAME, any other destination is refused; SEND is refused.
     * Thread: the connection's loop thread, also with queue_events.
     */
    void (*on_stomp)(void *userdata, petrel_server *server, uint64_t conn, void *conn_data,
                     const petrel_stomp_frame *frame);
    /**
     * STOMP: an ACK (negative 0) or NACK (negative 1) settled `count` messages of the subscription
     * with id `subscription`: their event ids are event_ids[0..count) (count is 0 when the frame
     * named a message already settled; a 1.0 ACK of an id no subscription has outstanding is not
     * reported). `position`: every message delivered to the subscription up
     * to this event id is now acknowledged. Topics do not deliver again after a NACK.
     * Thread: the connection's loop thread, also with queue_events.
     */
    void (*on_stomp_ack)(void *userdata, petrel_server *server, uint64_t conn, void *conn_data,
                         const char *subscription, const uint64_t *event_ids, size_t count, int32_t negative,
                         uint64_t position);
    /**
     * The access log, to the application instead of a file (not with access_log_file): an entry
     * per plain request answered, upgrade and close of an upgraded connection. Keep it short: the
     * loop waits for it. Thread: the connection's loop thread, also with queue_events.
     */
    void (*on_access_log)(void *userdata, petrel_server *server, const petrel_access_log_entry *entry);
} petrel_server_callbacks;

/**
 * Answers the request on_http is handling, with Content-Length and Cache-Control: no-store (and
 * Connection: close when the connection will close after it). status: 200-599; content_type: e.g. "application/json" (no CR or LF).
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT; PETREL_E_STATE (answered already).
 * Ownership: body is copied. Thread: only inside on_http, with its request.
 */
petrel_status petrel_http_respond(const petrel_http_request *request, uint16_t status, const char *content_type,
                                  const void *body, size_t len);

/**
 * Answers the frame on_stomp is looking at with yes. SUBSCRIBE: `topic` is the topic it reads
 * (required; MESSAGE frames still name the client's destination). SEND: the body (text when it is
 * UTF-8, else binary) is published to `topic`, or, with topic NULL, the application took it.
 * CONNECT: topic is ignored. A RECEIPT follows when the frame asked for one.
 * Returns: PETREL_OK; PETREL_E_NULL (frame NULL; topic NULL for SUBSCRIBE); PETREL_E_INVALID_ARGUMENT
 *          (topic not UTF-8); PETREL_E_STATE (answered already). Ownership: topic is copied.
 * Thread: only inside on_stomp, with its frame.
 */
petrel_status petrel_stomp_allow(const petrel_stomp_frame *frame, const char *topic);

/**
 * Refuses the frame on_stomp is looking at: an ERROR frame whose message header is `message`
 * (UTF-8, one line), then the connection closes (1008).
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (not UTF-8, or a line break);
 *          PETREL_E_STATE (answered already). Thread: only inside on_stomp, with its frame.
 */
petrel_status petrel_stomp_refuse(const petrel_stomp_frame *frame, const char *message);

/**
 * Copies a header of the frame on_stomp is looking at (the first of that name; names are
 * case-sensitive, values unescaped) into buf, with the conventions of petrel_conn_path.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (name not UTF-8); PETREL_E_AGAIN
 *          (absent); PETREL_E_BUFFER_TOO_SMALL. A value with a NUL octet is seen up to it.
 * Thread: only inside on_stomp, with its frame.
 */
petrel_status petrel_stomp_header(const petrel_stomp_frame *frame, const char *name, char *buf, size_t cap,
                                  size_t *len_out);

/**
 * Copies a header (first field of that name, case-insensitive) or a query parameter (decoded:
 * %XX and '+') of the request into buf, with the conventions of petrel_conn_path.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_AGAIN (absent); PETREL_E_BUFFER_TOO_SMALL.
 * Thread: only inside on_http, with its request.
 */
petrel_status petrel_http_header(const petrel_http_request *request, const char *name, char *buf, size_t cap,
                                 size_t *len_out);
petrel_status petrel_http_query_param(const petrel_http_request *request, const char *name, char *buf, size_t cap,
                                      size_t *len_out);

/**
 * Accepts the upgrade on_upgrade is looking at. subprotocol: one the client offered
 * (Sec-WebSocket-Protocol), or NULL for the configured preference; conn_data: the connection's
 * pointer (see on_open), or NULL. Once this returns PETREL_OK, the 101 is queued and on_open
 * follows as soon as on_upgrade returns, with *conn_data set to it; on_close ends the connection.
 * Returns: PETREL_OK; PETREL_E_NULL (request NULL); PETREL_E_INVALID_ARGUMENT (a subprotocol the
 *          client did not offer, or not UTF-8); PETREL_E_STATE (answered already, or not an
 *          upgrade). Nothing is attached unless PETREL_OK is returned.
 * Ownership: subprotocol is copied; conn_data stays the caller's (the library only hands it back).
 * Thread: only inside on_upgrade, with its request.
 */
petrel_status petrel_upgrade_accept(const petrel_http_request *request, const char *subprotocol, void *conn_data);

/** Zeroes *callbacks and sets its size. Thread: any. */
void petrel_server_callbacks_init(petrel_server_callbacks *callbacks);

/**
 * Creates a server (nothing is bound yet).
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_CONFIG_SIZE; PETREL_E_INVALID_ARGUMENT;
 *          PETREL_E_URL (engine_url is not an engine address; petrel_last_error says why).
 * Ownership: *server_out is the caller's; release it with petrel_server_destroy.
 * Thread: any.
 */
petrel_status petrel_server_create(const petrel_server_config *config, const petrel_server_callbacks *callbacks,
                                   petrel_server **server_out);

/**
 * Binds and starts the loop threads; returns once the server is listening.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_STATE (already started); PETREL_E_RESOLVE;
 *          PETREL_E_BIND; PETREL_E_SOCKET; PETREL_E_THREAD; PETREL_E_ENGINE (engine_url names a
 *          Redis that cannot be reached; petrel_last_error says why).
 * Thread: any (one at a time per handle).
 */
petrel_status petrel_server_start(petrel_server *server);

/**
 * Binds and runs the server on the calling thread (other loops on background threads) until
 * petrel_server_stop is called from another thread or a callback.
 * Returns: as petrel_server_start, once stopped.
 */
petrel_status petrel_server_run(petrel_server *server);

/**
 * External-poll mode: binds the server with one loop and starts no thread. The host (a libuv,
 * glib or game loop) watches *fd_out for readability and calls petrel_server_service on one
 * thread of its own; that thread runs every callback. Calls documented "any thread" still work
 * from other threads: they wake the fd.
 * Returns: as petrel_server_start. Ownership: the fd stays the server's; do not close it.
 */
petrel_status petrel_server_start_external(petrel_server *server, int *fd_out);

/**
 * External-poll mode: runs one iteration, waiting up to timeout_ms for work (0: not at all).
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_STOPPED once the server has stopped (after
 *          petrel_server_stop, keep calling until this is returned); PETREL_E_STATE (not started
 *          with petrel_server_start_external).
 * Thread: the host's one thread.
 */
petrel_status petrel_server_service(petrel_server *server, int32_t timeout_ms);

/**
 * Stops accepting, sends close 1001 to every peer, waits up to grace_ms for them, then closes the
 * rest. From a non-loop thread it returns when the threads have ended; from a callback, or in
 * external-poll mode, it only starts the shutdown.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_STOPPED (not running, or a stop is already under
 *          way: that call returns at once; petrel_server_destroy waits for the stop to finish).
 * Thread: any.
 */
petrel_status petrel_server_stop(petrel_server *server, uint32_t grace_ms);

/**
 * Stops the server (with a 1 s grace) if running, and releases it. NULL does nothing.
 * Returns: PETREL_OK; PETREL_E_WRONG_THREAD when called from a callback (nothing is released).
 * Thread: any thread but the server's loop threads.
 */
petrel_status petrel_server_destroy(petrel_server *server);

/**
 * The port the server is bound to (useful with port 0).
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_STOPPED (not started).
 * Thread: any.
 */
petrel_status petrel_server_port(const petrel_server *server, uint16_t *port_out);

/**
 * Loads the TLS certificate and key files again (same paths), for connections accepted from now
 * on; open connections keep theirs. On failure the server keeps the files it had.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (the server has no TLS);
 *          PETREL_E_TLS (a file could not be loaded, or the key does not match).
 * Thread: any.
 */
petrel_status petrel_server_reload_tls(petrel_server *server);

/** Open connections (WebSocket and those still in their handshake). Thread: any. */
petrel_status petrel_server_connection_count(const petrel_server *server, uint64_t *count_out);

/**
 * Queued events (queue_events = 1): a batch of whole records, for a host that would rather pull
 * events on a thread of its own than be called on Petrel's loop threads (a language runtime
 * with a global lock, such as CPython, spends far less per message this way). Each record is a
 * petrel_event_record followed by `len` bytes, padded with zeros to a multiple of 8 bytes:
 * OPEN carries the request target ("/path?query"), MESSAGE the message, CLOSE the reason,
 * DRAIN nothing. A connection's records come in order: open, messages and drains, close. The
 * records describe the past: by the time an open record is read the connection may already
 * have closed (calls with its id then return PETREL_E_UNKNOWN_CONNECTION; its close record
 * follows).
 * Waits up to timeout_ms (-1: no limit) for at least one record, then copies as many whole
 * records as fit in cap bytes into buf. With buf NULL and cap 0 it reports the size of the
 * next record (PETREL_E_BUFFER_TOO_SMALL) without taking it.
 * The queue holds event_queue_bytes; when it is full, loop threads wait for room (a record
 * bigger than the whole queue still goes in once the queue is empty). Once a stop has begun,
 * and in external-poll mode (where the loop runs on the consumer's thread), nothing waits:
 * the queue grows instead. queue_events needs max_message_size below 4 GiB
 * (PETREL_E_INVALID_ARGUMENT from petrel_server_create otherwise).
 * Returns: PETREL_OK (*len_out = bytes written, at least one record); PETREL_E_TIMEOUT;
 *          PETREL_E_BUFFER_TOO_SMALL (the first record needs *len_out bytes: call again with
 *          that much); PETREL_E_STOPPED (the server stopped, however the stop began, and every
 *          record was handed out); PETREL_E_STATE (queue_events is 0); PETREL_E_WRONG_THREAD
 *          (called on a loop thread); PETREL_E_NULL.
 * Thread: any thread that is not a loop thread; one consumer at a time. After
 * petrel_server_stop, let the consumer see PETREL_E_STOPPED before petrel_server_destroy.
 */
typedef struct petrel_event_record {
    uint64_t conn;                /* the connection's id */
    uint32_t len;                 /* bytes that follow the record */
    uint16_t code;                /* PETREL_QUEUED_CLOSE: the close code */
    uint8_t type;                 /* PETREL_QUEUED_* */
    uint8_t kind;                 /* PETREL_QUEUED_MESSAGE: PETREL_TEXT or PETREL_BINARY */
} petrel_event_record;
#define PETREL_QUEUED_OPEN 1
#define PETREL_QUEUED_MESSAGE 2
#define PETREL_QUEUED_CLOSE 3
#define PETREL_QUEUED_DRAIN 4
petrel_status petrel_server_next_events(petrel_server *server, int32_t timeout_ms, void *buf, size_t cap, size_t *len_out);

/**
 * Publishes a message to every subscriber of `topic` on every loop. The frame is encoded once.
 * Subscribers receive a topic's messages in publish order. With engine_url, the message goes
 * to Redis, which gives its id, and reaches the subscribers of every server on that Redis
 * (this one included) when each reads it back; the call waits for Redis's answer.
 * key: NULL, or the coalescing key (PETREL_SLOW_COALESCE keeps the newest message per key).
 * kind: PETREL_TEXT or PETREL_BINARY, optionally | PETREL_STAMP_ID.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (bad kind, text not UTF-8, or
 *          PETREL_STAMP_ID without {{id}} in data); PETREL_E_STOPPED; PETREL_E_ENGINE (Redis unreachable or refused: not published;
 *          its answer timed out: Redis may still add it; petrel_last_error says why).
 * Ownership: data is copied. *event_id_out (may be NULL) receives the message's event id.
 * Thread: any.
 */
petrel_status petrel_server_publish(petrel_server *server, const char *topic, int32_t kind, const void *data,
                                    size_t len, const char *key, uint64_t *event_id_out);

/**
 * A topic's observer: one message, with its event id, its kind (PETREL_TEXT or PETREL_BINARY)
 * and its coalescing key (NULL if none). topic, data and key are borrowed until it returns.
 */
typedef void (*petrel_topic_observer)(void *userdata, petrel_server *server, const char *topic, uint64_t event_id,
                                      int32_t kind, const uint8_t *data, size_t len, const char *key);

/**
 * Calls `observer` with every message of `topic`, in id order, whoever published it:
 * for a server that keeps state from a topic (prices for a snapshot, say) on every node. One
 * observer per topic; a second call replaces the first.
 * In-process engine: on the thread that called petrel_server_publish, before it returns (in id
 *   order as long as one thread at a time publishes to the topic).
 * engine_url: first, inside petrel_server_start, the topic's recent history (its last
 *   topic_replay messages); then each message the server reads from Redis, on the engine's
 *   reader thread.
 * The ids tell what happened upstream: an id that does not follow the last one means messages
 * were lost (a new history, or entries trimmed before this server read them); after Redis lost
 * or went back in its history, the stream's newest messages are given again, which may repeat
 * ids already seen. data is NULL when len is 0.
 * The observer runs outside the library's locks. It may publish, subscribe and call
 * petrel_server_stop; petrel_server_destroy from it returns PETREL_E_WRONG_THREAD. It must not
 * wait for a lock your code holds across an in-process petrel_server_publish to that topic (the
 * observer runs inside that call) or across petrel_server_stop (which waits for the reader
 * thread). userdata must stay valid until petrel_server_destroy.
 * Returns: PETREL_OK; PETREL_E_NULL (server, topic or observer); PETREL_E_INVALID_ARGUMENT (topic
 *          not UTF-8); PETREL_E_STATE (the server was started already).
 * Ownership: topic is copied. Thread: any, before petrel_server_start and any publish.
 */
petrel_status petrel_server_observe(petrel_server *server, const char *topic, petrel_topic_observer observer,
                                    void *userdata);

/* ------------------------------------------------------------------------------------------- */
/* Connections of a server, by id                                                               */
/* ------------------------------------------------------------------------------------------- */

/**
 * Queues a message. kind: PETREL_TEXT (data must be valid UTF-8) or PETREL_BINARY.
 * From another thread than the connection's loop, PETREL_OK means "handed to the loop": if the
 * connection closes first, the message is dropped with it.
 * Returns: PETREL_OK; PETREL_E_NULL (server NULL, or data NULL with len > 0);
 *          PETREL_E_INVALID_ARGUMENT; PETREL_E_UNKNOWN_CONNECTION; PETREL_E_CLOSED;
 *          PETREL_E_BACKPRESSURE (not queued); PETREL_E_TOO_BIG (over max_message_size).
 * Ownership: data is copied before return. Thread: any.
 */
petrel_status petrel_conn_send(petrel_server *server, uint64_t conn, int32_t kind, const void *data, size_t len);

/**
 * Starts the closing handshake with `code` (1000-1003, 1007-1014, 3000-4999) and a UTF-8 reason
 * of at most 123 bytes (NULL for none).
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT; PETREL_E_UNKNOWN_CONNECTION.
 * Thread: any.
 */
petrel_status petrel_conn_close(petrel_server *server, uint64_t conn, uint16_t code, const char *reason);

/** Subscribes the connection to `topic`. Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_UNKNOWN_CONNECTION. Thread: any. */
petrel_status petrel_conn_subscribe(petrel_server *server, uint64_t conn, const char *topic);

/**
 * paused 1: stops reading from the connection, until called again with paused 0. For a consumer
 * that has fallen behind: TCP then slows the peer down. Messages the loop reads before the call
 * reaches it still arrive. Closing the connection ends the pause (its close frame must be read);
 * while paused, the peer's pings are not answered and idle_timeout/pong_timeout still run; a pause
 * asked for once a close has begun is ignored. An SSE stream or a closed connection ignores it.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (paused not 0 or 1);
 *          PETREL_E_UNKNOWN_CONNECTION.
 * Thread: any.
 */
petrel_status petrel_conn_pause_reading(petrel_server *server, uint64_t conn, int32_t paused);

/**
 * *is_stomp_out = 1 when the connection speaks STOMP (stomp_paths; decided before on_open), else 0.
 * Topics reach such a connection as STOMP MESSAGE frames of the subscriptions it makes itself;
 * petrel_conn_send would put bytes that are not STOMP in its stream.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_UNKNOWN_CONNECTION. Thread: any.
 */
petrel_status petrel_conn_is_stomp(petrel_server *server, uint64_t conn, int32_t *is_stomp_out);

/** Unsubscribes the connection from `topic`. Returns as petrel_conn_subscribe. Thread: any. */
petrel_status petrel_conn_unsubscribe(petrel_server *server, uint64_t conn, const char *topic);

/**
 * Replaces the connection's pointer (the conn_data its callbacks receive). A callback that has
 * already begun keeps the value it was given. Once on_close has been handed the pointer, no
 * replacement lands: PETREL_E_UNKNOWN_CONNECTION says so (then free `conn_data` yourself: no
 * callback will). A call made while on_open runs is overwritten by what on_open leaves in
 * *conn_data.
 * Returns: PETREL_OK; PETREL_E_NULL (server NULL); PETREL_E_UNKNOWN_CONNECTION (no open
 *          connection has this id, or its on_close has begun).
 * Ownership: the pointer stays the caller's. Thread: any (the store is a release, the
 * callbacks' load an acquire).
 */
petrel_status petrel_conn_set_data(petrel_server *server, uint64_t conn, void *conn_data);

/**
 * *conn_data_out = the connection's pointer (NULL if none was set). From a thread other than the
 * connection's loop thread, what it points to may be freed by on_close at any moment: use it
 * only under a lock or reference count your on_close also takes.
 * Returns: PETREL_OK; PETREL_E_NULL (server or conn_data_out NULL); PETREL_E_UNKNOWN_CONNECTION
 *          (no open connection has this id, or its on_close has begun).
 * Thread: any.
 */
petrel_status petrel_conn_data(petrel_server *server, uint64_t conn, void **conn_data_out);

/** What petrel_server_each_conn calls for each open connection. */
typedef void (*petrel_conn_visitor)(void *userdata, petrel_server *server, uint64_t conn, void *conn_data);

/**
 * Calls fn(userdata, server, conn, conn_data) on the calling thread for each connection open
 * now: a WebSocket, STOMP connection or event stream whose on_open has returned and whose
 * on_close has not begun; never a plain HTTP exchange. No order; a connection that opens or
 * closes meanwhile may or may not be visited. For a health page or an administrative sweep, not
 * for each message: it copies each loop's table of connections.
 * conn_data stays valid for the call: while fn runs, an on_close that would receive a visited
 * pointer waits (on another thread) or, if fn itself closes the connection on this thread,
 * runs inside fn's call (then use conn_data no more). So keep fn short; it may call the
 * petrel_conn_* functions and petrel_http_respond, and petrel_server_each_conn again.
 * With queue_events = 1 there is no on_close to wait for: what your consumer frees when it takes
 * a close record may still be visited (the hazard of petrel_conn_data).
 * Returns: PETREL_OK; PETREL_E_NULL (server or fn NULL).
 * Thread: any, a callback's included.
 */
petrel_status petrel_server_each_conn(petrel_server *server, petrel_conn_visitor fn, void *userdata);

/**
 * Sends a ping with up to 125 bytes of payload (data may be NULL when len is 0). Its pong, like
 * that of ping_interval_ms's pings, gives the round-trip time and counts for pong_timeout_ms.
 * Returns: PETREL_OK (handed to the loop; dropped if the connection closes first); PETREL_E_NULL;
 *          PETREL_E_INVALID_ARGUMENT (len over 125, or an event stream, which has no pings);
 *          PETREL_E_UNKNOWN_CONNECTION.
 * Ownership: data is copied. Thread: any.
 */
petrel_status petrel_conn_ping(petrel_server *server, uint64_t conn, const void *data, size_t len);

/**
 * *rtt_ms_out = the time between the last ping the server sent the connection (petrel_conn_ping
 * or ping_interval_ms) and its pong, in milliseconds.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_UNKNOWN_CONNECTION; PETREL_E_AGAIN (no pong yet).
 * Thread: any.
 */
petrel_status petrel_conn_rtt(petrel_server *server, uint64_t conn, uint32_t *rtt_ms_out);

/**
 * Copies the subprotocol the handshake chose (Sec-WebSocket-Protocol) into buf, with the
 * conventions of petrel_conn_path.
 * Returns: PETREL_OK; PETREL_E_NULL (server or len_out NULL); PETREL_E_INVALID_ARGUMENT (cap over
 *          SIZE_MAX / 2); PETREL_E_UNKNOWN_CONNECTION; PETREL_E_AGAIN (none was chosen, or an
 *          event stream); PETREL_E_BUFFER_TOO_SMALL (*len_out = the size needed). Thread: any.
 */
petrel_status petrel_conn_subprotocol(petrel_server *server, uint64_t conn, char *buf, size_t cap, size_t *len_out);

/** Bytes queued for the connection and not yet written. Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_UNKNOWN_CONNECTION. Thread: any. */
petrel_status petrel_conn_buffered_amount(petrel_server *server, uint64_t conn, uint64_t *bytes_out);

/**
 * Copies a property of the connection's upgrade request, or its peer address, into buf (not
 * NUL-terminated unless room allows: *len_out is the length without the NUL).
 * petrel_conn_header takes a header name (case-insensitive) and returns the first such field.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (cap over SIZE_MAX / 2, or a
 *          name that is not UTF-8); PETREL_E_UNKNOWN_CONNECTION; PETREL_E_AGAIN (no such
 *          header, or no query); PETREL_E_BUFFER_TOO_SMALL (*len_out = the size needed).
 * Thread: any.
 */
petrel_status petrel_conn_path(petrel_server *server, uint64_t conn, char *buf, size_t cap, size_t *len_out);
petrel_status petrel_conn_query(petrel_server *server, uint64_t conn, char *buf, size_t cap, size_t *len_out);
petrel_status petrel_conn_header(petrel_server *server, uint64_t conn, const char *name, char *buf, size_t cap,
                                 size_t *len_out);
petrel_status petrel_conn_peer_address(petrel_server *server, uint64_t conn, char *buf, size_t cap, size_t *len_out);
/**
 * Copies the connection's client address into buf, as petrel_conn_peer_address does: the peer's,
 * or the one a PROXY protocol header or a trusted proxy's Forwarded / X-Forwarded-For header gave
 * (proxy_protocol, trusted_proxies): "192.0.2.7:5555", "[2001:db8::7]:4711", or a bare address
 * when the header gave no port.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_UNKNOWN_CONNECTION; PETREL_E_BUFFER_TOO_SMALL
 *          (*len_out = the size needed).
 * Thread: any.
 */
petrel_status petrel_conn_client_address(petrel_server *server, uint64_t conn, char *buf, size_t cap, size_t *len_out);
/** A query parameter of the connection's request, decoded (%XX and '+'); conventions as above. */
petrel_status petrel_conn_query_param(petrel_server *server, uint64_t conn, const char *name, char *buf, size_t cap,
                                      size_t *len_out);

/* Event streams and resuming. A GET to one of event_stream_paths becomes a Server-Sent Events
 * stream (text/event-stream): on_open fires for it as for a WebSocket (petrel_conn_path tells
 * which), text sent to it goes out as an event ("data:" lines), topic messages go out as events
 * with "id:" set to their event id, and ping_interval_ms sends keepalive comments. Binary
 * messages cannot be sent to a stream (PETREL_E_INVALID_ARGUMENT). */

/**
 * Sends text; on an event stream it carries "id: event_id" (0 for none), which the browser sends
 * back as Last-Event-ID when it reconnects. On a WebSocket it is petrel_conn_send(PETREL_TEXT).
 * Returns and Thread: as petrel_conn_send.
 */
petrel_status petrel_conn_send_event(petrel_server *server, uint64_t conn, uint64_t event_id, const void *data,
                                     size_t len);

/**
 * The event id a reconnecting client saw last: its Last-Event-ID header (EventSource sends it),
 * else a last_event_id query parameter.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_UNKNOWN_CONNECTION; PETREL_E_AGAIN (none, or not a
 *          number). Thread: any.
 */
petrel_status petrel_conn_last_event_id(petrel_server *server, uint64_t conn, uint64_t *event_id_out);

/**
 * Subscribes so that every message published to `topic` after `after_id` reaches the connection
 * exactly once and in order: first those the topic's replay ring (topic_replay) still holds
 * (with engine_url, then those the Redis stream still holds), then live ones. For a gapless snapshot, build it under the lock you publish under, with the
 * last event id petrel_server_publish gave, send it, then call this with that id.
 * Returns: PETREL_OK; PETREL_E_REPLAY_GONE (the ring no longer holds them all, or the id was
 *          never given out: nothing is subscribed; send a snapshot); PETREL_E_NULL;
 *          PETREL_E_INVALID_ARGUMENT; PETREL_E_UNKNOWN_CONNECTION.
 * Thread: any.
 */
petrel_status petrel_conn_subscribe_after(petrel_server *server, uint64_t conn, const char *topic, uint64_t after_id);

/* ------------------------------------------------------------------------------------------- */
/* Client                                                                                       */
/* ------------------------------------------------------------------------------------------- */

typedef struct petrel_client petrel_client;

typedef struct petrel_client_config {
    size_t size;                  /* set by petrel_client_config_init */
    uint32_t connect_timeout_ms;  /* default 10000 */
    uint32_t handshake_timeout_ms; /* default 10000 */
    uint64_t max_message_size;    /* default 16 MiB */
    int32_t compression;          /* default 1: offer permessage-deflate */
    const char *subprotocols;     /* comma-separated offer, or NULL */
    const char *origin;           /* Origin header, or NULL */
    const char *tls_ca_file;      /* wss://: trusted CAs (PEM); NULL uses the system store */
    const char *tls_server_name;  /* wss://: SNI and the name checked; NULL: the URL's host */
    const char *tls_cert_file;    /* wss://: a client certificate chain (PEM), or NULL */
    const char *tls_key_file;     /* its private key */
    int32_t tls_insecure_skip_verify; /* default 0. 1 accepts ANY certificate for ANY name: tests only */
    const char *proxy;            /* NULL, or http://[user:pass@]host:port (CONNECT), https://... (TLS to
                                     the proxy, then CONNECT), socks5://[user:pass@]host:port */
    int32_t proxy_from_environment; /* default 0. 1 (with proxy NULL): wss_proxy/ws_proxy/HTTPS_PROXY/
                                     HTTP_PROXY, unless NO_PROXY lists the host */
    const char *headers;          /* extra request headers, "Name: value" lines joined by "\r\n", or
                                     NULL. Refused (PETREL_E_INVALID_ARGUMENT, see petrel_last_error):
                                     a name that is not a token, a control character in a value, and
                                     the names the handshake writes (Host, Upgrade, Connection,
                                     Origin, Sec-WebSocket-*, Content-Length, Transfer-Encoding) */
    uint64_t max_backpressure;    /* default 1 MiB: over it, petrel_client_send returns
                                     PETREL_E_BACKPRESSURE until on_drain */
    uint32_t ping_interval_ms;    /* default 0 (none): a ping after this much silence from the server */
    uint32_t pong_timeout_ms;     /* default 10000: with ping_interval_ms, the pong must come within
                                     it, else the connection is failed at once (close 1011) */
    int32_t reconnect;            /* default 0. 1: connect again after a loss (RECONNECTING below) */
    uint32_t reconnect_initial_delay_ms; /* default 250: the wait before the first attempt */
    uint32_t reconnect_max_delay_ms;     /* default 30000: the wait doubles per attempt up to this */
    uint32_t reconnect_jitter_percent;   /* default 50: up to this share of each wait is taken off at random */
    uint32_t reconnect_max_attempts;     /* default 0: never give up; N: end after N failed attempts in a row */
    int32_t queue_while_reconnecting;    /* default 0: petrel_client_send returns PETREL_E_RECONNECTING
                                            between connections. 1: it queues the message (up to
                                            max_backpressure bytes in all), sent first on the next open */
} petrel_client_config;

/** Fills *config with the defaults above and sets its size. Thread: any. */
void petrel_client_config_init(petrel_client_config *config);

/**
 * Why the last petrel_client_connect, petrel_server_start/_run/_start_external or
 * petrel_server_reload_tls on the calling thread failed (e.g. "TLS: certificate verify failed:
 * certificate has expired", "proxy http://p:3128: CONNECT refused: 407 Proxy Authentication
 * Required"); "" after a petrel_client_connect that succeeded, or before any failure.
 * Ownership: the library's; valid until the next of those calls on this thread.
 * Thread: any (each thread has its own).
 */
const char *petrel_last_error(void);

/*
 * RECONNECTING. With config.reconnect = 1, a client whose connection is lost connects again by
 * itself, on the same petrel_client handle, and resumes: once the application has named the
 * last event id it received (petrel_client_set_last_event_id), each attempt asks for what came
 * after it, with a Last-Event-ID header and last_event_id=N in the URL's query (Petrel servers
 * and petrel.js read either). A loss is: the transport ended (1006), no pong within
 * pong_timeout_ms (1011), or the server closed with 1001, 1011, 1012, 1013 or 1014. An attempt
 * is made after a wait of initial_delay · 2^(n-1) (at most max_delay, less the jitter); one
 * that fails for the network's reasons (refused, reset, timeout, 408, 429, 5xx) is tried again;
 * another refusal (401, 403, 404, ...), a certificate or proxy refusal, max_attempts failures
 * in a row, or any other close code ends the client: state CLOSED, then on_close, once.
 * petrel_client_connect's own attempt is not retried: it returns its error. Messages received
 * go on to on_message (or petrel_client_receive) across connections; receive returns
 * PETREL_E_CLOSED only at the end. docs/c-api.md, "Reconnecting".
 */
#define PETREL_CLIENT_CONNECTING 1   /* an attempt starts: attempt = 1, 2, ... */
#define PETREL_CLIENT_OPEN 2         /* open (again); attempt = the attempts it took (0: the first connect) */
#define PETREL_CLIENT_RECONNECTING 3 /* the connection was lost or an attempt failed (reason says
                                        why); attempt `attempt` follows after delay_ms */
#define PETREL_CLIENT_CLOSED 4       /* the end: reason says why; on_close follows */

/**
 * Client callbacks: with on_message, messages are delivered to it on the client loop thread
 * (borrowed until it returns) and petrel_client_receive is not used; with on_message NULL they
 * wait for petrel_client_receive. Each may be NULL.
 */
typedef struct petrel_client_callbacks {
    size_t size;                  /* set by petrel_client_callbacks_init */
    void *userdata;
    void (*on_message)(void *userdata, petrel_client *client, int32_t kind, const uint8_t *data, size_t len);
    void (*on_close)(void *userdata, petrel_client *client, uint16_t code, const char *reason, size_t reason_len);
    /* After a petrel_client_send returned PETREL_E_BACKPRESSURE: everything queued is written. */
    void (*on_drain)(void *userdata, petrel_client *client);
    /* A state change (PETREL_CLIENT_*), on the client loop thread or the reconnect thread, one at
       a time; reason borrowed until it returns. With reconnect = 0: OPEN, then CLOSED. */
    void (*on_state)(void *userdata, petrel_client *client, int32_t state, uint32_t attempt, uint32_t delay_ms,
                     const char *reason, size_t reason_len);
} petrel_client_callbacks;

/** Zeroes *callbacks and sets its size. Thread: any. */
void petrel_client_callbacks_init(petrel_client_callbacks *callbacks);

/**
 * Connects to a ws:// URL (host names are resolved here; IPv6 literals in brackets) and completes
 * the opening handshake, blocking until the connection is open or has failed.
 * callbacks: NULL (or on_message NULL) to receive with petrel_client_receive instead.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_CONFIG_SIZE; PETREL_E_INVALID_ARGUMENT; PETREL_E_URL;
 *          PETREL_E_RESOLVE; PETREL_E_CONNECT; PETREL_E_CONNECT_TIMEOUT; PETREL_E_HANDSHAKE;
 *          PETREL_E_WRONG_THREAD (called from a client callback, which would wait for itself);
 *          PETREL_E_THREAD (the client loop could not be started).
 * Ownership: *client_out is the caller's; release it with petrel_client_destroy.
 * Thread: any.
 */
petrel_status petrel_client_connect(const char *url, const petrel_client_config *config,
                                    const petrel_client_callbacks *callbacks, petrel_client **client_out);

/**
 * Queues a message (copied). kind: PETREL_TEXT (valid UTF-8) or PETREL_BINARY.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT; PETREL_E_CLOSED; PETREL_E_BACKPRESSURE;
 *          PETREL_E_RECONNECTING (reconnect = 1 and queue_while_reconnecting = 0: between
 *          connections, nothing sent). A message queued while reconnecting is dropped if the
 *          client ends before it reconnects; one sent just before a loss may be lost with the
 *          connection (acknowledge in the application what must arrive).
 * Thread: any.
 */
petrel_status petrel_client_send(petrel_client *client, int32_t kind, const void *data, size_t len);

/**
 * Names the last event id the application has received (and handled): the next reconnect
 * resumes after it. Call it from on_message once the message is handled, with the id the
 * message carries (Petrel's servers stamp it where the published text has {{id}}). Once an id
 * is named, messages of a lost connection still waiting for petrel_client_receive are dropped
 * when the next attempt starts: they come again after the id. With petrel_client_receive, name
 * the id as soon as the message is taken; a message taken but not yet named when the attempt
 * starts comes again, so skip an id at or below the last one handled (as petrel.js does).
 * With on_message there is no such window: a connection's messages are all handled before its
 * loss is. Returns: PETREL_OK; PETREL_E_NULL. Thread: any.
 */
petrel_status petrel_client_set_last_event_id(petrel_client *client, uint64_t id);

/**
 * *id_out = the last event id named with petrel_client_set_last_event_id.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_AGAIN (none named yet). Thread: any.
 */
petrel_status petrel_client_last_event_id(petrel_client *client, uint64_t *id_out);

/**
 * *state_out = the client's state (PETREL_CLIENT_*, as on_state last reported it) and
 * *attempt_out its attempt number: for receive-mode clients, which have no on_state.
 * Returns: PETREL_OK; PETREL_E_NULL. Thread: any.
 */
petrel_status petrel_client_state(petrel_client *client, int32_t *state_out, uint32_t *attempt_out);

/**
 * Waits up to timeout_ms (negative: forever) for the next message and copies it into buf.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_TIMEOUT; PETREL_E_CLOSED (no more messages: the
 *          connection ended, see petrel_client_close_status); PETREL_E_BUFFER_TOO_SMALL (*len_out
 *          is the size needed; the message stays queued); PETREL_E_STATE (on_message is set).
 * Thread: one at a time per client.
 */
petrel_status petrel_client_receive(petrel_client *client, int32_t timeout_ms, int32_t *kind_out, void *buf, size_t cap,
                                    size_t *len_out);

/**
 * Starts the closing handshake (code 1000-1003, 1007-1014, 3000-4999; reason UTF-8, at most 123
 * bytes, or NULL), and ends reconnecting: between connections, the client ends at once (CLOSED,
 * on_close with this code and reason). Returns: PETREL_OK; PETREL_E_NULL;
 * PETREL_E_INVALID_ARGUMENT; PETREL_E_CLOSED. Thread: any.
 */
petrel_status petrel_client_close(petrel_client *client, uint16_t code, const char *reason);

/**
 * Once the connection has ended: the close code (the peer's, ours if we closed first, 1006 if
 * the transport just ended) and reason.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_AGAIN (still open); PETREL_E_BUFFER_TOO_SMALL.
 * Thread: any.
 */
petrel_status petrel_client_close_status(petrel_client *client, uint16_t *code_out, char *reason, size_t cap,
                                         size_t *len_out);

/**
 * paused 1: stops reading from the server until called again with paused 0 (TCP then slows the
 * server down). Messages the loop reads before the call reaches it still arrive. Closing ends
 * the pause; while paused, the server's pings are not answered.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (paused not 0 or 1); PETREL_E_CLOSED.
 * Thread: any.
 */
petrel_status petrel_client_pause_reading(petrel_client *client, int32_t paused);

/**
 * Sends a ping with up to 125 bytes of payload (data may be NULL when len is 0); its pong gives
 * the round-trip time.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT (len over 125); PETREL_E_CLOSED.
 * Ownership: data is copied. Thread: any.
 */
petrel_status petrel_client_ping(petrel_client *client, const void *data, size_t len);

/**
 * *rtt_ms_out = the time between the client's last ping (petrel_client_ping) and its pong, in
 * milliseconds.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_AGAIN (no pong yet). Thread: any.
 */
petrel_status petrel_client_rtt(petrel_client *client, uint32_t *rtt_ms_out);

/**
 * Copies the subprotocol the server chose into buf, with the conventions of petrel_conn_path.
 * Returns: PETREL_OK; PETREL_E_NULL (client or len_out NULL); PETREL_E_INVALID_ARGUMENT (cap
 *          over SIZE_MAX / 2); PETREL_E_AGAIN (the server chose none); PETREL_E_BUFFER_TOO_SMALL
 *          (*len_out = the size needed). Thread: any.
 */
petrel_status petrel_client_subprotocol(petrel_client *client, char *buf, size_t cap, size_t *len_out);

/**
 * After petrel_client_connect returned PETREL_E_HANDSHAKE on this thread because the server
 * answered with an HTTP status other than 101 (401, 403, 404, 503...): *status_out = that status,
 * and the response body is copied into buf with the conventions of petrel_conn_path (body may
 * be NULL with cap 0 to ask only for the status and the length). The body is at most 16 KiB: a
 * Content-Length body as far as it came within the handshake timeout; without Content-Length,
 * the bytes that came with the head; a chunked body is not decoded (empty).
 * Returns: PETREL_OK (*status_out, *len_out and the body written);
 *          PETREL_E_BUFFER_TOO_SMALL (*status_out and *len_out written, nothing copied);
 *          PETREL_E_NULL (status_out or len_out NULL); PETREL_E_INVALID_ARGUMENT (cap over
 *          SIZE_MAX / 2); PETREL_E_AGAIN (the last connect on this thread was not refused with
 *          a status: it succeeded, or failed otherwise).
 * Thread: any (each thread has its own; petrel_client_connect resets it).
 */
petrel_status petrel_last_refusal(uint16_t *status_out, char *body, size_t cap, size_t *len_out);

/** Closes the connection if open (1001), waits for a callback in progress, and releases the
 *  client; no callback runs after it returns. NULL does nothing. Thread: not a client callback. */
void petrel_client_destroy(petrel_client *client);

/* ------------------------------------------------------------------------------------------- */
/* Sans-I/O session: for hosts that run their own event loop and sockets                        */
/* ------------------------------------------------------------------------------------------- */

/**
 * A session is one WebSocket connection without I/O: the host feeds it the bytes it reads,
 * polls the events they produce, and writes the bytes it takes out. The opening handshake is
 * included: a server session answers the HTTP upgrade request, a client session starts with its
 * request queued as output. Not thread-safe: one thread at a time.
 */
typedef struct petrel_session petrel_session;

#define PETREL_ROLE_SERVER 0
#define PETREL_ROLE_CLIENT 1

typedef struct petrel_session_config {
    size_t size;                  /* set by petrel_session_config_init */
    int32_t role;                 /* PETREL_ROLE_SERVER (default) or PETREL_ROLE_CLIENT */
    uint64_t max_message_size;    /* default 16 MiB */
    uint32_t max_header_bytes;    /* default 16 KiB */
    int32_t compression;          /* default 1: negotiate permessage-deflate (a server keeps no compression
                                     context between messages, as petrel_server does) */
    int32_t auto_pong;            /* default 1: answer pings */
    const char *subprotocols;     /* server: preference list; client: offer (comma-separated) */
    const char *host;             /* client: the Host header, e.g. "example.com:8080" (required) */
    const char *path;             /* client: the request target, default "/" */
    const char *origin;           /* client: Origin header, or NULL */
    uint32_t max_header_count;    /* default 100: header fields in the request or response head (431 beyond) */
    const char *allowed_origins;  /* server: comma-separated Origin values that may connect (403 for others); NULL: any */
} petrel_session_config;

/** Fills *config with the defaults above and sets its size. Thread: any. */
void petrel_session_config_init(petrel_session_config *config);

/** Event types returned by petrel_session_poll_event. */
#define PETREL_EVENT_OPEN 1       /* the handshake completed; data = the chosen subprotocol, if any */
#define PETREL_EVENT_TEXT 2       /* a complete text message (valid UTF-8) */
#define PETREL_EVENT_BINARY 3
#define PETREL_EVENT_PING 4       /* with auto_pong, the pong is already queued */
#define PETREL_EVENT_PONG 5
#define PETREL_EVENT_CLOSE 6      /* the peer's close frame: close_code (1005 if none) and reason in data */
#define PETREL_EVENT_ERROR 7      /* the connection failed: status and close_code; the close frame (or HTTP error) is queued */

typedef struct petrel_event {
    int32_t type;                 /* PETREL_EVENT_* */
    petrel_status status;         /* PETREL_EVENT_ERROR: why */
    uint16_t close_code;          /* PETREL_EVENT_CLOSE and _ERROR */
    const uint8_t *data;          /* borrowed until the next call on this session */
    size_t len;
} petrel_event;

/**
 * Creates a session. A client session has its handshake request queued as output.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_CONFIG_SIZE; PETREL_E_INVALID_ARGUMENT (a client
 *          without host, or a bad value).
 * Ownership: *session_out is the caller's; release it with petrel_session_destroy.
 */
petrel_status petrel_session_create(const petrel_session_config *config, petrel_session **session_out);

/**
 * Hands the session bytes read from the transport; all of them are taken (copied). Events are
 * queued for petrel_session_poll_event, replies (pongs, the handshake response, close frames)
 * for petrel_session_take_output.
 * Returns: PETREL_OK (even when the bytes made the connection fail: that is an event);
 *          PETREL_E_NULL; PETREL_E_CLOSED (the session reads nothing more).
 */
petrel_status petrel_session_feed(petrel_session *session, const void *data, size_t len);

/** The peer closed the transport. Queues an ERROR event (1006) unless the closing handshake was done. */
petrel_status petrel_session_end_of_stream(petrel_session *session);

/** Takes the next event. Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_AGAIN (no event). */
petrel_status petrel_session_poll_event(petrel_session *session, petrel_event *event_out);

/**
 * Queues a message (kind PETREL_TEXT, valid UTF-8, or PETREL_BINARY), compressed if negotiated.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_INVALID_ARGUMENT; PETREL_E_STATE (handshake not
 *          done); PETREL_E_SENDING_CLOSED.
 */
petrel_status petrel_session_send(petrel_session *session, int32_t kind, const void *data, size_t len);

/** Queues a ping (at most 125 bytes). Returns: as petrel_session_send, or PETREL_E_CONTROL_PAYLOAD. */
petrel_status petrel_session_ping(petrel_session *session, const void *data, size_t len);

/** Starts the closing handshake. Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_BAD_CLOSE_CODE;
 *  PETREL_E_CLOSE_REASON_LONG; PETREL_E_SENDING_CLOSED; PETREL_E_INVALID_ARGUMENT. */
petrel_status petrel_session_close(petrel_session *session, uint16_t code, const char *reason);

/**
 * Copies up to cap queued output bytes into buf and consumes them; *len_out = bytes copied.
 * Returns: PETREL_OK; PETREL_E_NULL; PETREL_E_AGAIN (nothing queued).
 */
petrel_status petrel_session_take_output(petrel_session *session, void *buf, size_t cap, size_t *len_out);

/** Bytes queued for the transport (0 for NULL). */
size_t petrel_session_pending_output(const petrel_session *session);

/** 1 if the session still reads from the transport, else 0. */
int32_t petrel_session_want_read(const petrel_session *session);

/** 1 if output is queued, else 0. */
int32_t petrel_session_want_write(const petrel_session *session);

/** 1 once the transport should be closed after the queued output is written, else 0. */
int32_t petrel_session_should_close(const petrel_session *session);

/** Releases the session. NULL does nothing. */
void petrel_session_destroy(petrel_session *session);

#ifdef __cplusplus
}
#endif

#endif /* PETREL_H */
