/*
 * wsgen: a lean WebSocket load generator for W4 (idle sockets) and W5 (reconnect storm).
 *
 * One process, one epoll loop, no third-party library. It opens `n` connections at
 * `rate` per second (each bound to one of the `src` addresses before connecting, so
 * one source address does not run out of ephemeral ports), does the opening handshake
 * (offering no extension), answers pings with masked pongs, and reads every text
 * frame just enough to account for it:
 *
 *   welcome            the connection counts as open (its time is recorded)
 *   subscribed         recovered true/false (false moves the position, as the web
 *                      client's cursor does)
 *   an event frame     its position.offset: duplicates (offset <= last) and gaps
 *                      (offset > last + 1, the missing count) are counted; a
 *                      `bench-t=<19 digits>` marker gives its latency
 *   error              counted by code
 *
 * mode=idle: a connection that ends is counted and never reopened (W4); one that
 * fails to open is given up, or with retry=1 retried on the schedule below until it
 * opens once (browsers opening a page retry so).
 * mode=storm: a lost connection reconnects as the web client does (clients/web/src/
 * client.ts): attempt n waits base(n) * (1 - jitter * r), base(n) = min(max_ms,
 * initial_ms * factor^(n-1)), r uniform in [0, 1); attempts restart at 1 once a
 * socket heard anything; after max_attempts failures in a row the client gives up;
 * a socket not open within connect_timeout_ms is given up on. It reconnects with
 * `?since=TOPIC:EPOCH:OFFSET` from its last position (W5).
 *
 * Control: one command per line on stdin:
 *   kill NS     the reference instant (CLOCK_REALTIME ns) of a storm: time-to-open,
 *               time-to-resumed and time-to-live are measured from it
 *   live NS     an event published (marker) at or after NS means "live again"
 *   report      print a progress line now
 *   stop        print the final report line and exit (also on SIGTERM, SIGINT or EOF)
 * Output: JSON lines on stdout: {"event":"progress",...} every report_ms, and one
 * {"event":"report",...} at the end.
 *
 *   wsgen schedule initial_ms=500 max_ms=15000 factor=2 jitter=0.5 attempts=6 r=0,0.5,0.99
 * prints the reconnect delays (ms) for each attempt and each r: [[d(1,r0),...],...].
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Limits: every buffer is bounded. */
#define MAX_SRC 64
#define MAX_PARTIAL (1 << 20)  /* bytes kept of an incomplete frame or response head */
#define READ_BUF (256 * 1024)
#define MAX_CODES 16           /* distinct error codes / HTTP statuses / close codes kept */
#define EPOCH_MAX 64

enum state { S_NONE, S_WAIT, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_FAILED, S_DONE };

enum flag {
    F_HEARD = 1,       /* this socket received a message */
    F_WELCOMED = 2,    /* welcomed at least once (ever) */
    F_BACK = 4,        /* welcomed again after `kill` */
    F_RESUMED = 8,     /* recovered:true after `kill` */
    F_LIVE = 16,       /* received an event published after `live` */
    F_MARKER = 32,     /* received a marker (first one recorded) */
    F_LOST = 64,       /* lost its connection after `kill` */
    F_GAPPED = 128,    /* missed an event (a gap in its offsets) */
    F_DUPED = 256,     /* received an offset twice */
};

struct conn {
    int fd;
    uint8_t state;
    uint8_t attempt;
    uint8_t src;
    uint16_t flags;
    int64_t last;       /* last offset received, -1: none */
    int64_t due;        /* monotonic ns of its timer (reconnect or connect deadline), 0: none */
    char *partial;
    uint32_t plen;
};

struct counter {
    char key[24];
    uint64_t n;
};

struct counters {
    struct counter c[MAX_CODES];
    int used;
    uint64_t other;
};

struct u32vec {
    uint32_t *v;
    size_t n, cap;
};

struct heap_item {
    int64_t due;
    uint32_t idx;
};

/* --- configuration --------------------------------------------------------------- */
static const char *cfg_host = "127.0.0.1";
static int cfg_port = 0;
static const char *cfg_path = "/ws/packages";
static const char *cfg_topic = "package_updates";
static long cfg_n = 0;
static double cfg_rate = 1000;
static int cfg_storm = 0;
static int cfg_retry = 0;
static double cfg_initial_ms = 500, cfg_max_ms = 15000, cfg_factor = 2, cfg_jitter = 0.5;
static int cfg_max_attempts = 5;
static double cfg_connect_timeout_ms = 10000;
static double cfg_report_ms = 500;
static unsigned cfg_seed = 1;
static struct in_addr src_addr[MAX_SRC];
static int src_count = 0;
static struct sockaddr_in dst;

/* --- state ----------------------------------------------------------------------- */
static struct conn *conns;
static long opened_initial = 0; /* connections started by the paced opening */
static int64_t t_start_mono = 0, t_start_real = 0;
static int64_t first_welcome_real = 0, last_welcome_real = 0;
static int64_t kill_real = 0, live_real = 0;
static char epoch[EPOCH_MAX + 1];
static int epoch_len = -1;
static int ep = -1;
static volatile sig_atomic_t stop_flag = 0;
static char rbuf[READ_BUF];
static char stdin_buf[4096];
static size_t stdin_len = 0;

static struct heap_item *heap;
static size_t heap_n = 0, heap_cap = 0;

/* counts */
static uint64_t c_welcomed = 0, c_events = 0, c_dups = 0, c_gaps = 0, c_gap_events = 0;
static uint64_t c_rec_true = 0, c_rec_false = 0, c_markers = 0, c_attempts = 0;
static uint64_t c_lost = 0, c_gave_up = 0, c_epoch_mismatch = 0, c_pings = 0, c_frames = 0;
static uint64_t c_short_writes = 0, c_bad_frames = 0;
static int64_t marker_max_us = -1;
static struct counters conn_errors, http_status, close_codes, error_codes;
static struct u32vec v_marker_ms, v_back_ms, v_resumed_ms, v_live_ms, v_open_ms, v_attempts;

/* --- small helpers --------------------------------------------------------------- */
static int64_t now_ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static int64_t mono(void) { return now_ns(CLOCK_MONOTONIC); }
static int64_t real(void) { return now_ns(CLOCK_REALTIME); }

static void die(const char *what) {
    fprintf(stderr, "wsgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void count(struct counters *cs, const char *key) {
    for (int i = 0; i < cs->used; i++)
        if (strcmp(cs->c[i].key, key) == 0) {
            cs->c[i].n++;
            return;
        }
    if (cs->used < MAX_CODES) {
        snprintf(cs->c[cs->used].key, sizeof cs->c[0].key, "%s", key);
        cs->c[cs->used++].n = 1;
    } else {
        cs->other++;
    }
}

static void push(struct u32vec *v, uint32_t x) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 1024;
        v->v = realloc(v->v, v->cap * sizeof *v->v);
        if (!v->v) die("realloc");
    }
    v->v[v->n++] = x;
}

static uint32_t ms_since(int64_t from_real, int64_t at_real) {
    int64_t d = at_real - from_real;
    return d <= 0 ? 0 : (uint32_t)(d / 1000000);
}

/* The reconnect delay of attempt n (1-based), ms: core/backoff.py and backoff.ts. */
static double backoff_ms(int attempt, double r) {
    if (attempt < 1) attempt = 1;
    double base = cfg_initial_ms * pow(cfg_factor, attempt - 1);
    if (base > cfg_max_ms) base = cfg_max_ms;
    if (r < 0) r = 0;
    if (r > 1) r = 1;
    return base * (1 - cfg_jitter * r);
}

static double uniform(void) { return (double)rand() / ((double)RAND_MAX + 1.0); }

/* --- timers: a min-heap of (due, conn); stale entries are skipped -------------------- */
static void heap_push(int64_t due, uint32_t idx) {
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof *heap);
        if (!heap) die("realloc");
    }
    size_t i = heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p].due <= due) break;
        heap[i] = heap[p];
        i = p;
    }
    heap[i].due = due;
    heap[i].idx = idx;
}

static struct heap_item heap_pop(void) {
    struct heap_item top = heap[0], last = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        int64_t md = last.due;
        if (l < heap_n && heap[l].due < md) m = l, md = heap[l].due;
        if (r < heap_n && heap[r].due < md) m = r;
        if (m == i) break;
        heap[i] = heap[m];
        i = m;
    }
    if (heap_n) heap[i] = last;
    return top;
}

static void set_timer(uint32_t idx, int64_t due) {
    conns[idx].due = due;
    heap_push(due, idx);
}

/* --- connections ----------------------------------------------------------------- */
static void close_fd(struct conn *c) {
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from epoll */
        c->fd = -1;
    }
    free(c->partial);
    c->partial = NULL;
    c->plen = 0;
}

static void start_attempt(uint32_t idx);

/* The connection is gone (or never came): idle mode ends it; storm mode backs off. */
static void lost(uint32_t idx, const char *why) {
    struct conn *c = &conns[idx];
    int was_open = c->state == S_OPEN;
    close_fd(c);
    c->due = 0;
    if (was_open) c_lost++;
    if (kill_real && was_open) c->flags |= F_LOST;
    if (why) count(&conn_errors, why);
    if (!cfg_storm && (was_open || (c->flags & F_WELCOMED) || !cfg_retry)) {
        c->state = was_open ? S_DONE : S_FAILED;
        return;
    }
    if (c->flags & F_HEARD) c->attempt = 0;
    c->flags &= (uint16_t)~F_HEARD;
    c->attempt++;
    if (c->attempt > cfg_max_attempts) {
        c->state = S_FAILED;
        c_gave_up++;
        return;
    }
    c->state = S_WAIT;
    set_timer(idx, mono() + (int64_t)(backoff_ms(c->attempt, uniform()) * 1e6));
}

static int send_all(struct conn *c, const void *buf, size_t len) {
    ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (w == (ssize_t)len) return 0;
    c_short_writes++;
    return -1;
}

static int send_masked(struct conn *c, int opcode, const unsigned char *payload, size_t len) {
    unsigned char f[2 + 4 + 125];
    if (len > 125) len = 125;
    uint32_t key = (uint32_t)rand();
    f[0] = (unsigned char)(0x80 | opcode);
    f[1] = (unsigned char)(0x80 | len);
    memcpy(f + 2, &key, 4);
    for (size_t i = 0; i < len; i++) f[6 + i] = payload[i] ^ f[2 + (i & 3)];
    return send_all(c, f, 6 + len);
}

static void start_attempt(uint32_t idx) {
    struct conn *c = &conns[idx];
    c_attempts++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        lost(idx, errno == EMFILE ? "EMFILE" : "socket");
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (src_count) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr = src_addr[c->src]};
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            lost(idx, "bind");
            return;
        }
    }
    c->state = S_CONNECTING;
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        lost(idx, errno == ECONNREFUSED ? "ECONNREFUSED"
                  : errno == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                                           : "connect");
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = idx};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    set_timer(idx, mono() + (int64_t)(cfg_connect_timeout_ms * 1e6));
}

static void send_request(uint32_t idx) {
    struct conn *c = &conns[idx];
    char req[1024], target[512];
    const char *sep = strchr(cfg_path, '?') ? "&" : "?";
    if (cfg_storm && c->last >= 0 && epoch_len >= 0)
        snprintf(target, sizeof target, "%s%ssince=%s:%s:%" PRId64, cfg_path, sep, cfg_topic,
                 epoch, c->last);
    else
        snprintf(target, sizeof target, "%s", cfg_path);
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       target, cfg_host, cfg_port);
    if (send_all(c, req, (size_t)len) < 0) {
        lost(idx, "write");
        return;
    }
    c->state = S_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* --- frames ---------------------------------------------------------------------- */
static const char *find(const char *p, size_t n, const char *needle) {
    return memmem(p, n, needle, strlen(needle));
}

static int64_t parse_int_after(const char *p, size_t n, const char *key) {
    const char *k = find(p, n, key);
    if (!k) return -1;
    const char *s = k + strlen(key), *end = p + n;
    int64_t v = 0;
    int digits = 0;
    while (s < end && *s >= '0' && *s <= '9' && digits < 19) v = v * 10 + (*s++ - '0'), digits++;
    return digits ? v : -1;
}

static void note_epoch(const char *p, size_t n) {
    const char *k = find(p, n, "\"epoch\":\"");
    if (!k) return;
    const char *s = k + 9, *end = p + n, *q = s;
    while (q < end && *q != '"' && q - s < EPOCH_MAX) q++;
    int len = (int)(q - s);
    if (epoch_len < 0) {
        memcpy(epoch, s, (size_t)len);
        epoch[len] = 0;
        epoch_len = len;
    } else if (len != epoch_len || memcmp(epoch, s, (size_t)len) != 0) {
        c_epoch_mismatch++;
    }
}

static void on_event(struct conn *c, const char *p, size_t n, int64_t at) {
    c_events++;
    int64_t off = parse_int_after(p, n, "\"offset\":");
    if (off >= 0) {
        note_epoch(p, n);
        if (c->last < 0) {
            c->last = off;
        } else if (off <= c->last) {
            c_dups++;
            c->flags |= F_DUPED;
        } else {
            if (off > c->last + 1) {
                c_gaps++;
                c->flags |= F_GAPPED;
                c_gap_events += (uint64_t)(off - c->last - 1);
            }
            c->last = off;
        }
    }
    int64_t stamp = parse_int_after(p, n, "bench-t=");
    if (stamp > 0) {
        c_markers++;
        if (!(c->flags & F_MARKER)) {
            c->flags |= F_MARKER;
            int64_t us = (at - stamp) / 1000;
            if (us < 0) us = 0;
            push(&v_marker_ms, (uint32_t)(us / 1000));
            if (us > marker_max_us) marker_max_us = us;
        }
        if (live_real && stamp >= live_real && !(c->flags & F_LIVE)) {
            c->flags |= F_LIVE;
            push(&v_live_ms, ms_since(kill_real, at));
        }
    }
}

static void on_text(uint32_t idx, const char *p, size_t n, int64_t at) {
    struct conn *c = &conns[idx];
    c_frames++;
    const char *t = find(p, n < 64 ? n : 64, "\"type\":\"");
    if (!t) {
        c_bad_frames++;
        return;
    }
    const char *ty = t + 8;
    size_t rest = (size_t)(p + n - ty);
#define IS(s) (rest > sizeof(s) - 1 && memcmp(ty, s "\"", sizeof(s)) == 0)
    if (IS("welcome")) {
        c_welcomed++;
        if (!(c->flags & F_WELCOMED)) {
            c->flags |= F_WELCOMED;
            if (!first_welcome_real) first_welcome_real = at;
            last_welcome_real = at;
            push(&v_open_ms, ms_since(t_start_real, at));
        }
        if (kill_real && (c->flags & F_LOST) && !(c->flags & F_BACK)) {
            c->flags |= F_BACK;
            push(&v_back_ms, ms_since(kill_real, at));
            push(&v_attempts, c->attempt);
        }
    } else if (IS("subscribed")) {
        if (find(p, n, "\"recovered\":false")) {
            c_rec_false++;
            int64_t off = parse_int_after(p, n, "\"offset\":");
            if (off >= 0) c->last = off; /* where the stream continues */
        } else {
            c_rec_true++;
            if (kill_real && (c->flags & F_LOST) && !(c->flags & F_RESUMED)) {
                c->flags |= F_RESUMED;
                push(&v_resumed_ms, ms_since(kill_real, at));
            }
        }
    } else if (IS("error")) {
        const char *k = find(p, n, "\"code\":\"");
        char code[24] = "?";
        if (k) {
            const char *s = k + 8, *q = s;
            while (q < p + n && *q != '"' && q - s < 23) q++;
            memcpy(code, s, (size_t)(q - s));
            code[q - s] = 0;
        }
        count(&error_codes, code);
    } else if (IS("pong") || IS("unsubscribed") || IS("refreshed")) {
        /* nothing to account */
    } else {
        on_event(c, p, n, at);
    }
#undef IS
}

/* Walks complete frames of `buf`; returns bytes consumed, or -1 when the connection is lost. */
static long walk_frames(uint32_t idx, const char *buf, size_t n, int64_t at) {
    size_t pos = 0;
    while (n - pos >= 2) {
        const unsigned char *h = (const unsigned char *)buf + pos;
        int opcode = h[0] & 0x0F;
        uint64_t len = h[1] & 0x7F;
        size_t hl = 2;
        if (h[1] & 0x80) {
            c_bad_frames++; /* a server must not mask */
            lost(idx, "masked_server_frame");
            return -1;
        }
        if (len == 126) {
            if (n - pos < 4) break;
            len = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
        } else if (len == 127) {
            if (n - pos < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | h[2 + i];
            hl = 10;
        }
        if (len > MAX_PARTIAL) {
            lost(idx, "frame_too_large");
            return -1;
        }
        if (n - pos < hl + len) break;
        const char *payload = buf + pos + hl;
        conns[idx].flags |= F_HEARD;
        if (opcode == 0x1) {
            on_text(idx, payload, (size_t)len, at);
        } else if (opcode == 0x9) {
            c_pings++;
            if (send_masked(&conns[idx], 0xA, (const unsigned char *)payload, (size_t)len) < 0) {
                lost(idx, "write");
                return -1;
            }
        } else if (opcode == 0x8) {
            char code[8] = "1005";
            if (len >= 2)
                snprintf(code, sizeof code, "%u",
                         ((unsigned)(unsigned char)payload[0] << 8) | (unsigned char)payload[1]);
            count(&close_codes, code);
            send_masked(&conns[idx], 0x8, (const unsigned char *)payload, len >= 2 ? 2 : 0);
            lost(idx, NULL);
            return -1;
        }
        pos += hl + len;
    }
    return (long)pos;
}

/* Reads the handshake response head; returns bytes consumed, 0 if incomplete, -1 if lost. */
static long handshake(uint32_t idx, const char *buf, size_t n) {
    const char *end = find(buf, n, "\r\n\r\n");
    if (!end) {
        if (n > 16384) {
            lost(idx, "response_too_long");
            return -1;
        }
        return 0;
    }
    int status = 0;
    if (n > 12 && memcmp(buf, "HTTP/1.1 ", 9) == 0) status = atoi(buf + 9);
    if (status != 101) {
        char key[16];
        snprintf(key, sizeof key, "%d", status);
        count(&http_status, key);
        lost(idx, "http_refused");
        return -1;
    }
    struct conn *c = &conns[idx];
    c->state = S_OPEN; /* attempts restart only once a message is heard (client.ts) */
    c->due = 0;        /* opened: the connect timer is off */
    return (long)(end - buf + 4);
}

static void on_readable(uint32_t idx) {
    struct conn *c = &conns[idx];
    ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (r == 0) {
        lost(idx, c->state == S_OPEN ? "eof" : "eof_in_handshake");
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        lost(idx, errno == ECONNRESET ? "ECONNRESET" : "recv");
        return;
    }
    int64_t at = real();
    const char *data = rbuf;
    size_t n = (size_t)r;
    char *joined = NULL;
    if (c->plen) {
        joined = malloc(c->plen + n);
        if (!joined) die("malloc");
        memcpy(joined, c->partial, c->plen);
        memcpy(joined + c->plen, rbuf, n);
        data = joined;
        n += c->plen;
        free(c->partial);
        c->partial = NULL;
        c->plen = 0;
    }
    size_t pos = 0;
    if (c->state == S_HANDSHAKE) {
        long used = handshake(idx, data, n);
        if (used < 0) goto out;
        pos = (size_t)used;
    }
    if (c->state == S_OPEN && n > pos) {
        long used = walk_frames(idx, data + pos, n - pos, at);
        if (used < 0) goto out;
        pos += (size_t)used;
    }
    if (n > pos) {
        if (n - pos > MAX_PARTIAL) {
            lost(idx, "buffer_overflow");
            goto out;
        }
        c->partial = malloc(n - pos);
        if (!c->partial) die("malloc");
        memcpy(c->partial, data + pos, n - pos);
        c->plen = (uint32_t)(n - pos);
    }
out:
    free(joined);
}

static void on_writable(uint32_t idx) {
    struct conn *c = &conns[idx];
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        lost(idx, err == ECONNREFUSED ? "ECONNREFUSED" : err == ETIMEDOUT ? "ETIMEDOUT" : "connect");
        return;
    }
    send_request(idx);
}

static void on_timer(uint32_t idx) {
    struct conn *c = &conns[idx];
    c->due = 0;
    if (c->state == S_WAIT) {
        start_attempt(idx);
    } else if (c->state == S_CONNECTING || c->state == S_HANDSHAKE) {
        lost(idx, "connect_timeout");
    }
}

/* --- reports --------------------------------------------------------------------- */
static void print_counters(const char *name, const struct counters *cs) {
    printf(",\"%s\":{", name);
    for (int i = 0; i < cs->used; i++) printf("%s\"%s\":%" PRIu64, i ? "," : "", cs->c[i].key, cs->c[i].n);
    if (cs->other) printf("%s\"other\":%" PRIu64, cs->used ? "," : "", cs->other);
    printf("}");
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* A histogram as [[value, count], ...], sorted by value. */
static void print_hist(const char *name, struct u32vec *v) {
    qsort(v->v, v->n, sizeof *v->v, cmp_u32);
    printf(",\"%s\":[", name);
    size_t i = 0;
    int first = 1;
    while (i < v->n) {
        size_t j = i;
        while (j < v->n && v->v[j] == v->v[i]) j++;
        printf("%s[%u,%zu]", first ? "" : ",", v->v[i], j - i);
        first = 0;
        i = j;
    }
    printf("]");
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void progress(void) {
    long by_state[S_DONE + 1] = {0};
    long positioned = 0, back = 0, resumed = 0, live = 0, markers = 0, welcomed = 0;
    int64_t lo = -1, hi = -1;
    for (long i = 0; i < cfg_n; i++) {
        struct conn *c = &conns[i];
        by_state[c->state]++;
        if (c->flags & F_WELCOMED) welcomed++;
        if (c->flags & F_BACK) back++;
        if (c->flags & F_RESUMED) resumed++;
        if (c->flags & F_LIVE) live++;
        if (c->flags & F_MARKER) markers++;
        if (c->last >= 0 && c->state != S_FAILED) {
            positioned++;
            if (lo < 0 || c->last < lo) lo = c->last;
            if (c->last > hi) hi = c->last;
        }
    }
    printf("{\"event\":\"progress\",\"t_ns\":%" PRId64 ",\"n\":%ld,\"started\":%ld,\"open\":%ld,"
           "\"welcomed\":%ld,\"connecting\":%ld,\"waiting\":%ld,\"failed\":%ld,\"ended\":%ld,"
           "\"positioned\":%ld,\"min_offset\":%" PRId64 ",\"max_offset\":%" PRId64 ",\"back\":%ld,"
           "\"resumed\":%ld,\"live\":%ld,\"markers\":%ld,\"lost\":%" PRIu64 "}\n",
           real(), cfg_n, opened_initial, by_state[S_OPEN], welcomed,
           by_state[S_CONNECTING] + by_state[S_HANDSHAKE], by_state[S_WAIT], by_state[S_FAILED],
           by_state[S_DONE], positioned, lo, hi, back, resumed, live, markers, c_lost);
    fflush(stdout);
}

static void final_report(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
                 (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    struct u32vec lasts = {0};
    long open_now = 0, failed = 0, lost_never_back = 0, gapped = 0, duped = 0;
    for (long i = 0; i < cfg_n; i++) {
        struct conn *c = &conns[i];
        if (c->state == S_OPEN) open_now++;
        if (c->state == S_FAILED) failed++;
        if ((c->flags & F_LOST) && !(c->flags & F_BACK)) lost_never_back++;
        if (c->last >= 0 && c->state != S_FAILED) push(&lasts, (uint32_t)c->last);
        if (c->flags & F_GAPPED) gapped++;
        if (c->flags & F_DUPED) duped++;
    }
    printf("{\"event\":\"report\",\"n\":%ld,\"started\":%ld,\"welcomed\":%ld,\"open_now\":%ld,"
           "\"failed\":%ld,\"gave_up\":%" PRIu64 ",\"attempts\":%" PRIu64 ",\"lost\":%" PRIu64
           ",\"never_back\":%ld,\"welcome_frames\":%" PRIu64 ",\"frames\":%" PRIu64
           ",\"events\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"gaps\":%" PRIu64
           ",\"gap_events\":%" PRIu64 ",\"recovered_true\":%" PRIu64 ",\"recovered_false\":%" PRIu64
           ",\"markers\":%" PRIu64 ",\"marker_max_us\":%" PRId64 ",\"pings\":%" PRIu64
           ",\"epoch_mismatch\":%" PRIu64 ",\"short_writes\":%" PRIu64 ",\"bad_frames\":%" PRIu64
           ",\"start_ns\":%" PRId64 ",\"first_welcome_ns\":%" PRId64 ",\"last_welcome_ns\":%" PRId64
           ",\"rss_kib\":%ld,\"cpu_s\":%.3f,\"clients_with_gaps\":%ld,\"clients_with_duplicates\":%ld",
           cfg_n, opened_initial, (long)v_open_ms.n, open_now, failed, c_gave_up, c_attempts,
           c_lost, lost_never_back, c_welcomed, c_frames, c_events, c_dups, c_gaps, c_gap_events,
           c_rec_true, c_rec_false, c_markers, marker_max_us, c_pings, c_epoch_mismatch,
           c_short_writes, c_bad_frames, t_start_real, first_welcome_real, last_welcome_real,
           rss_kib(), cpu, gapped, duped);
    print_counters("connect_errors", &conn_errors);
    print_counters("http_status", &http_status);
    print_counters("close_codes", &close_codes);
    print_counters("error_codes", &error_codes);
    print_hist("open_ms", &v_open_ms);
    print_hist("marker_ms", &v_marker_ms);
    print_hist("back_ms", &v_back_ms);
    print_hist("resumed_ms", &v_resumed_ms);
    print_hist("live_ms", &v_live_ms);
    print_hist("back_attempts", &v_attempts);
    print_hist("last_offsets", &lasts);
    printf("}\n");
    fflush(stdout);
}

static void on_stdin(void) {
    ssize_t r = read(0, stdin_buf + stdin_len, sizeof stdin_buf - 1 - stdin_len);
    if (r <= 0) {
        stop_flag = 1; /* the harness is gone */
        return;
    }
    stdin_len += (size_t)r;
    char *nl;
    while ((nl = memchr(stdin_buf, '\n', stdin_len))) {
        *nl = 0;
        long long v = 0;
        if (sscanf(stdin_buf, "kill %lld", &v) == 1) kill_real = v;
        else if (sscanf(stdin_buf, "live %lld", &v) == 1) live_real = v;
        else if (strcmp(stdin_buf, "report") == 0) progress();
        else if (strcmp(stdin_buf, "stop") == 0) stop_flag = 1;
        size_t used = (size_t)(nl - stdin_buf) + 1;
        memmove(stdin_buf, nl + 1, stdin_len - used);
        stdin_len -= used;
    }
    if (stdin_len == sizeof stdin_buf - 1) stdin_len = 0; /* an overlong line: dropped */
}

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

/* --- configuration --------------------------------------------------------------- */
static void parse_src(char *list) {
    for (char *tok = strtok(list, ","); tok && src_count < MAX_SRC; tok = strtok(NULL, ",")) {
        if (inet_pton(AF_INET, tok, &src_addr[src_count]) != 1) {
            fprintf(stderr, "wsgen: src: %s is not an IPv4 address\n", tok);
            exit(2);
        }
        src_count++;
    }
}

static void pin(char *list) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) CPU_SET(atoi(tok), &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity");
}

static void parse_arg(char *arg) {
    char *eq = strchr(arg, '=');
    if (!eq) {
        fprintf(stderr, "wsgen: expected key=value, got %s\n", arg);
        exit(2);
    }
    *eq = 0;
    const char *k = arg;
    char *v = eq + 1;
    if (!strcmp(k, "host")) cfg_host = v;
    else if (!strcmp(k, "port")) cfg_port = atoi(v);
    else if (!strcmp(k, "path")) cfg_path = v;
    else if (!strcmp(k, "topic")) cfg_topic = v;
    else if (!strcmp(k, "n")) cfg_n = atol(v);
    else if (!strcmp(k, "rate")) cfg_rate = atof(v);
    else if (!strcmp(k, "mode")) cfg_storm = !strcmp(v, "storm");
    else if (!strcmp(k, "retry")) cfg_retry = atoi(v);
    else if (!strcmp(k, "initial_ms")) cfg_initial_ms = atof(v);
    else if (!strcmp(k, "max_ms")) cfg_max_ms = atof(v);
    else if (!strcmp(k, "factor")) cfg_factor = atof(v);
    else if (!strcmp(k, "jitter")) cfg_jitter = atof(v);
    else if (!strcmp(k, "max_attempts")) cfg_max_attempts = atoi(v);
    else if (!strcmp(k, "connect_timeout_ms")) cfg_connect_timeout_ms = atof(v);
    else if (!strcmp(k, "report_ms")) cfg_report_ms = atof(v);
    else if (!strcmp(k, "seed")) cfg_seed = (unsigned)strtoul(v, NULL, 10);
    else if (!strcmp(k, "src")) parse_src(v);
    else if (!strcmp(k, "cpus")) pin(v);
    else if (!strcmp(k, "attempts") || !strcmp(k, "r")) return; /* schedule's */
    else {
        fprintf(stderr, "wsgen: unknown key %s\n", k);
        exit(2);
    }
}

static int schedule(int argc, char **argv) {
    int attempts = 6;
    char *rs = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strncmp(argv[i], "attempts=", 9)) attempts = atoi(argv[i] + 9);
        else if (!strncmp(argv[i], "r=", 2)) rs = argv[i] + 2;
        else parse_arg(argv[i]);
    }
    double r[64];
    int nr = 0;
    for (char *tok = rs ? strtok(rs, ",") : NULL; tok && nr < 64; tok = strtok(NULL, ","))
        r[nr++] = atof(tok);
    printf("[");
    for (int a = 1; a <= attempts; a++) {
        printf("%s[", a > 1 ? "," : "");
        for (int i = 0; i < nr; i++) printf("%s%.6f", i ? "," : "", backoff_ms(a, r[i]));
        printf("]");
    }
    printf("]\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "schedule")) return schedule(argc, argv);
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        fprintf(stderr, "usage: wsgen run key=value ... | wsgen schedule key=value ...\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) parse_arg(argv[i]);
    if (cfg_n < 0 || cfg_port <= 0 || cfg_rate <= 0 || cfg_factor < 1 || cfg_jitter < 0 ||
        cfg_jitter > 1 || cfg_max_attempts < 0 || cfg_max_attempts > 250) {
        fprintf(stderr, "wsgen: bad configuration (n, port, rate, factor, jitter, max_attempts)\n");
        return 2;
    }
    srand(cfg_seed);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)cfg_port);
    if (inet_pton(AF_INET, cfg_host, &dst.sin_addr) != 1) {
        fprintf(stderr, "wsgen: host: %s is not an IPv4 address\n", cfg_host);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    conns = calloc((size_t)cfg_n + 1, sizeof *conns);
    if (!conns) die("calloc");
    for (long i = 0; i < cfg_n; i++) {
        conns[i].fd = -1;
        conns[i].last = -1;
        conns[i].src = (uint8_t)(src_count ? i % src_count : 0);
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev) < 0) die("epoll_ctl stdin");

    t_start_mono = mono();
    t_start_real = real();
    int64_t next_report = t_start_mono + (int64_t)(cfg_report_ms * 1e6);
    struct epoll_event evs[1024];
    while (!stop_flag) {
        int64_t now = mono();
        /* the paced opening: connection i is due at start + i / rate */
        while (opened_initial < cfg_n &&
               t_start_mono + (int64_t)(opened_initial * 1e9 / cfg_rate) <= now) {
            start_attempt((uint32_t)opened_initial++);
        }
        while (heap_n && heap[0].due <= now) {
            struct heap_item it = heap_pop();
            if (conns[it.idx].due == it.due) on_timer(it.idx);
        }
        if (now >= next_report) {
            progress();
            next_report = now + (int64_t)(cfg_report_ms * 1e6);
        }
        int64_t wake = next_report;
        if (opened_initial < cfg_n) {
            int64_t due = t_start_mono + (int64_t)(opened_initial * 1e9 / cfg_rate);
            if (due < wake) wake = due;
        }
        if (heap_n && heap[0].due < wake) wake = heap[0].due;
        now = mono();
        int timeout = wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
        int k = epoll_wait(ep, evs, 1024, timeout);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < k; i++) {
            uint32_t idx = evs[i].data.u32;
            if (idx == UINT32_MAX) {
                on_stdin();
                continue;
            }
            struct conn *c = &conns[idx];
            if (c->fd < 0) continue;
            if (c->state == S_CONNECTING) {
                on_writable(idx);
            } else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_readable(idx);
            }
        }
    }
    final_report();
    return 0;
}
