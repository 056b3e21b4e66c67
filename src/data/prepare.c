/* basrec prepare: raw interaction logs to sequence files.
 *
 * Pipeline: stream the log through one buffer (no per-row allocation; a
 * record only moves when it straddles the buffer's end), intern user and item
 * strings into arena-backed hash tables, append (user, item, time) to three
 * parallel arrays; then a counting sort by user, a stable merge sort by time
 * inside each user, k-core peeling with a work stack, renumbering, and three
 * atomic writes. Peak memory is about 32 bytes per interaction plus the
 * distinct id strings. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/prepare.h"
#include "util/fileio.h"

#define DEFAULT_BUFFER ((size_t)4 << 20)
#define DEFAULT_MAX_RECORD ((size_t)1 << 20)
#define ARENA_CHUNK ((size_t)1 << 20)
#define SHOWN_TOKEN 40

void br_prepare_defaults(br_prepare_options *o) {
    memset(o, 0, sizeof *o);
    o->format = BR_LOG_CSV;
    o->user_col = "user_id";
    o->item_col = "item_id";
    o->time_col = "timestamp";
    o->min_user = 5;
    o->min_item = 5;
}

/* ---- timestamps and numbers ------------------------------------------- */

static bool all_digits(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return n > 0;
}

static int two_digits(const char *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m) {
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

/* Up to `keep` fraction digits as a count of 10^-keep units; the rest must
 * be digits too (they are dropped). */
static int64_t fraction(const char *s, size_t n, int keep) {
    int64_t f = 0;
    for (int i = 0; i < keep; i++) f = f * 10 + ((size_t)i < n ? s[i] - '0' : 0);
    return f;
}

static const char *parse_unix(const char *s, size_t n, int64_t *usec) {
    size_t i = s[0] == '-' ? 1 : 0, int_start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    size_t int_len = i - int_start, frac_start = i + 1, frac_len = 0;
    if (i < n && s[i] == '.') {
        frac_len = n - frac_start;
        if (!all_digits(s + frac_start, frac_len)) return "not a number or an ISO-8601 date";
        i = n;
    }
    if (int_len == 0 || i != n) return "not a number or an ISO-8601 date";
    if (int_len > 15) return "out of range"; /* keeps v * 1e6 and v * 1000 in range */
    int64_t v = 0;
    for (size_t k = int_start; k < int_start + int_len; k++) v = v * 10 + (s[k] - '0');
    /* Seconds up to the year 5138; larger values are milliseconds. */
    int64_t us = v < 100000000000LL ? v * 1000000 + fraction(s + frac_start, frac_len, 6)
                                    : v * 1000 + fraction(s + frac_start, frac_len, 3);
    *usec = s[0] == '-' ? -us : us;
    return NULL;
}

static const char *parse_iso(const char *s, size_t n, int64_t *usec) {
    if (n < 10 || !all_digits(s, 4) || s[4] != '-' || !all_digits(s + 5, 2) || s[7] != '-' ||
        !all_digits(s + 8, 2))
        return "not an ISO-8601 date (YYYY-MM-DD)";
    int y = two_digits(s) * 100 + two_digits(s + 2), mo = two_digits(s + 5), d = two_digits(s + 8);
    if (mo < 1 || mo > 12) return "month out of range";
    if (d < 1 || d > days_in_month(y, mo)) return "day out of range";
    int64_t secs = days_from_civil(y, mo, d) * 86400, frac = 0;
    size_t i = 10;
    if (i < n) {
        if (s[i] != 'T' && s[i] != 't' && s[i] != ' ') return "unexpected text after the date";
        i++;
        if (n - i < 5 || !all_digits(s + i, 2) || s[i + 2] != ':' || !all_digits(s + i + 3, 2))
            return "time is not HH:MM[:SS]";
        int h = two_digits(s + i), mi = two_digits(s + i + 3);
        if (h > 23) return "hour out of range";
        if (mi > 59) return "minute out of range";
        secs += h * 3600 + mi * 60;
        i += 5;
        if (i < n && s[i] == ':') {
            if (n - i < 3 || !all_digits(s + i + 1, 2)) return "seconds are not SS";
            int sec = two_digits(s + i + 1);
            if (sec > 59) return "second out of range";
            secs += sec;
            i += 3;
            if (i < n && s[i] == '.') {
                size_t f0 = ++i;
                while (i < n && s[i] >= '0' && s[i] <= '9') i++;
                if (i == f0) return "empty fraction of a second";
                frac = fraction(s + f0, i - f0, 6);
            }
        }
        if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
        } else if (i < n && (s[i] == '+' || s[i] == '-')) {
            int sign = s[i] == '-' ? -1 : 1;
            i++;
            if (n - i < 2 || !all_digits(s + i, 2)) return "zone offset is not +HH[:MM]";
            int oh = two_digits(s + i), om = 0;
            i += 2;
            bool colon = i < n && s[i] == ':';
            i += colon;
            if (colon || i < n) {
                if (n - i < 2 || !all_digits(s + i, 2)) return "zone offset is not +HH[:MM]";
                om = two_digits(s + i);
                i += 2;
            }
            if (oh > 23 || om > 59) return "zone offset out of range";
            secs -= sign * (oh * 3600 + om * 60);
        }
        if (i != n) return "unexpected text after the time";
    }
    *usec = secs * 1000000 + frac;
    return NULL;
}

const char *br_parse_timestamp(const char *s, size_t n, int64_t *usec) {
    if (n == 0) return "empty";
    if (n >= 5 && s[4] == '-' && all_digits(s, 4)) return parse_iso(s, n, usec);
    return parse_unix(s, n, usec);
}

const char *br_parse_number(const char *s, size_t n, double *out) {
    char tmp[64];
    if (n == 0) return "empty";
    if (n >= sizeof tmp) return "not a number";
    size_t i = s[0] == '+' || s[0] == '-' ? 1 : 0, digits = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) digits++;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) digits++;
    if (digits == 0) return "not a number";
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t e0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == e0) return "not a number";
    }
    if (i != n) return "not a number";
    /* The grammar is checked above; strtod (C locale) does the rounding. */
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    double v = strtod(tmp, NULL);
    if (!isfinite(v)) return "out of range";
    *out = v;
    return NULL;
}

/* ---- interned strings ------------------------------------------------- */

/* Word-at-a-time multiply-xorshift hash with murmur3's finaliser: good
 * avalanche on short ids, a few cycles per 8 bytes. */
static uint64_t hash_bytes(const char *s, size_t n) {
    const uint64_t m = 0x9E3779B97F4A7C15ull;
    uint64_t h = (uint64_t)n * m;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * m;
        h ^= h >> 29;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * m;
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Open addressing, linear probing, load <= 1/2. A slot's key holds the
 * hash's top 32 bits (which also pick the home slot, so growing needs no
 * rehash) and index + 1 (0: empty), next to the string itself: a lookup
 * touches the slot and the string, nothing else (it is memory-bound).
 * Strings live in arena chunks as a uint32 length followed by the bytes. */
typedef struct islot {
    uint64_t key;
    const char *str;
} islot;

typedef struct intern {
    islot *slots;
    uint64_t mask;
    int64_t n;
    char **chunks;
    int64_t n_chunks, chunks_cap;
    char *at;
    size_t left;
} intern;

static void intern_free(intern *t) {
    for (int64_t i = 0; i < t->n_chunks; i++) free(t->chunks[i]);
    free(t->chunks);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static int grow_array(void **arr, int64_t *cap, size_t elem, br_error *err) {
    int64_t new_cap = *cap < 1024 ? 1024 : *cap * 2;
    void *p = realloc(*arr, (size_t)new_cap * elem);
    if (!p) return br_errorf(err, "out of memory (%zu bytes)", (size_t)new_cap * elem);
    *arr = p;
    *cap = new_cap;
    return 0;
}

static int intern_grow_slots(intern *t, br_error *err) {
    uint64_t cap = t->slots ? (t->mask + 1) * 2 : 1024;
    islot *s = br_xcalloc(cap, sizeof *s, err);
    if (!s) return -1;
    for (uint64_t i = 0; t->slots && i <= t->mask; i++) {
        if (!t->slots[i].key) continue;
        uint64_t p = (t->slots[i].key >> 32) & (cap - 1);
        while (s[p].key) p = (p + 1) & (cap - 1);
        s[p] = t->slots[i];
    }
    free(t->slots);
    t->slots = s;
    t->mask = cap - 1;
    return 0;
}

static char *arena_alloc(intern *t, size_t size, br_error *err) {
    if (size > t->left) {
        if (t->n_chunks == t->chunks_cap &&
            grow_array((void **)&t->chunks, &t->chunks_cap, sizeof *t->chunks, err) < 0)
            return NULL;
        /* Chunks grow from 4 KiB to ARENA_CHUNK: small logs stay small. */
        size_t chunk = t->n_chunks < 8 ? (size_t)4096 << t->n_chunks : ARENA_CHUNK;
        chunk = size > chunk ? size : chunk;
        char *c = br_xmalloc(chunk, err);
        if (!c) return NULL;
        t->chunks[t->n_chunks++] = c;
        t->at = c;
        t->left = chunk;
    }
    char *p = t->at;
    t->at += size;
    t->left -= size;
    return p;
}

static const char *arena_str(const char *str, uint32_t *len) {
    memcpy(len, str, sizeof *len);
    return str + sizeof *len;
}

/* The strings by index (for writing the mappings); the caller frees. */
static const char **intern_by_index(const intern *t, br_error *err) {
    const char **v = br_xmalloc((size_t)t->n * sizeof *v, err);
    for (uint64_t i = 0; v && i <= t->mask; i++)
        if (t->slots[i].key) v[(t->slots[i].key & 0xffffffffu) - 1] = t->slots[i].str;
    return v;
}

static void intern_prefetch(const intern *t, uint64_t hash) {
    if (t->slots) __builtin_prefetch(&t->slots[(hash >> 32) & t->mask]);
}

/* Index of s (whose hash_bytes is hash), added if new; -1 on error. */
static int32_t intern_get(intern *t, const char *s, size_t n, uint64_t hash, const char *what,
                          br_error *err) {
    if ((uint64_t)(t->n + 1) * 2 > (t->slots ? t->mask + 1 : 0) && intern_grow_slots(t, err) < 0)
        return -1;
    uint64_t tag = hash >> 32, p = tag & t->mask;
    for (; t->slots[p].key; p = (p + 1) & t->mask) {
        if (t->slots[p].key >> 32 != tag) continue;
        uint32_t len;
        const char *str = arena_str(t->slots[p].str, &len);
        if (len == n && memcmp(str, s, n) == 0) return (int32_t)(t->slots[p].key & 0xffffffffu) - 1;
    }
    if (t->n >= BR_MAX_ITEM_ID) {
        br_errorf(err, "more than %d distinct %s ids", BR_MAX_ITEM_ID, what);
        return -1;
    }
    uint32_t len = (uint32_t)n;
    char *str = arena_alloc(t, sizeof len + n, err);
    if (!str) return -1;
    memcpy(str, &len, sizeof len);
    memcpy(str + sizeof len, s, n);
    int32_t idx = (int32_t)t->n++;
    t->slots[p] = (islot){tag << 32 | (uint64_t)(idx + 1), str};
    return idx;
}

/* ---- buffered reader -------------------------------------------------- */

typedef struct reader {
    int fd;
    const char *name;
    char *buf;
    size_t cap, pos, len; /* unread bytes are buf[pos, len) */
    size_t max_record;
    bool eof;
    int64_t line; /* line number of buf[pos] */
} reader;

/* Moves the unread bytes to the front and reads more; doubles the buffer
 * when they fill it. Callers only ask while the unread bytes are at most
 * max_record, so the buffer stays below 2 * (max_record + 1) or its initial
 * size. Sets eof at end of input. */
static int reader_fill(reader *r, br_error *err) {
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->len == r->cap) {
        size_t cap = r->cap * 2;
        char *b = realloc(r->buf, cap);
        if (!b) return br_errorf(err, "%s: out of memory (%zu-byte read buffer)", r->name, cap);
        r->buf = b;
        r->cap = cap;
    }
    for (;;) {
        ssize_t k = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (k > 0) {
            r->len += (size_t)k;
            return 0;
        }
        if (k == 0) {
            r->eof = true;
            return 0;
        }
        if (errno != EINTR) return br_errorf(err, "%s: read error: %s", r->name, strerror(errno));
    }
}

/* Discards through the next line break (resynchronising after a bad row). */
static int reader_skip_line(reader *r, br_error *err) {
    for (;;) {
        char *nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
        if (nl) {
            r->pos = (size_t)(nl + 1 - r->buf);
            r->line++;
            return 0;
        }
        r->pos = r->len;
        if (r->eof) return 0;
        if (reader_fill(r, err) < 0) return -1;
    }
}

/* ---- CSV records ------------------------------------------------------ */

typedef struct field {
    char *s;
    size_t n;
    bool quoted; /* s holds the text between the quotes, "" still doubled */
} field;

typedef struct csv_rec {
    size_t used;      /* bytes including the line break */
    int64_t nfields;
    int64_t newlines; /* line breaks inside quoted fields */
    bool empty;       /* a blank line */
    const char *problem;
} csv_rec;

enum { SCAN_OK, SCAN_MORE, SCAN_BAD };
/* The problem of a record that does not fit max_record (reported with the
 * limit). */
static const char TOO_LONG[] = "too long";

static int64_t count_newlines(const char *s, const char *e) {
    int64_t n = 0;
    while ((s = memchr(s, '\n', (size_t)(e - s)))) n++, s++;
    return n;
}

/* Scans one RFC-4180 record at p (a quote opens a field only at its start;
 * elsewhere it is literal; spaces around fields are trimmed unless the
 * delimiter is a space). Field k goes to out[slot[k]] when k < nslot and
 * slot[k] >= 0. SCAN_MORE: the record may continue past end (never when
 * eof). */
static int csv_scan(char *p, char *end, bool eof, char delim, const int32_t *slot,
                    int64_t nslot, field *out, csv_rec *rec) {
    bool trim = delim != ' ';
    char *q = p;
    int64_t k = 0, nl = 0;
    for (;;) {
        if (trim)
            while (q < end && *q == ' ') q++;
        field f;
        char *term;
        if (q < end && *q == '"') {
            char *c = q + 1;
            for (;;) {
                char *quote = memchr(c, '"', (size_t)(end - c));
                if (!quote) {
                    if (!eof) return SCAN_MORE;
                    rec->problem = "unterminated quoted field";
                    return SCAN_BAD;
                }
                nl += count_newlines(c, quote);
                if (quote + 1 == end && !eof) return SCAN_MORE;
                if (quote + 1 < end && quote[1] == '"') {
                    c = quote + 2;
                    continue;
                }
                c = quote;
                break;
            }
            f = (field){q + 1, (size_t)(c - q - 1), true};
            q = c + 1;
            if (trim)
                while (q < end && *q == ' ') q++;
            if (q < end && *q == '\r') {
                if (q + 1 == end && !eof) return SCAN_MORE;
                if (q + 1 == end || q[1] == '\n') q++;
            }
            if (q == end && !eof) return SCAN_MORE;
            if (q < end && *q != delim && *q != '\n') {
                rec->problem = "unexpected character after a closing quote";
                return SCAN_BAD;
            }
            term = q;
        } else {
            char *c = q;
            while (c < end && *c != delim && *c != '\n') c++;
            if (c == end && !eof) return SCAN_MORE;
            term = c;
            if (c == end || *c == '\n')
                if (c > q && c[-1] == '\r') c--;
            if (trim)
                while (c > q && c[-1] == ' ') c--;
            f = (field){q, (size_t)(c - q), false};
        }
        if (k < nslot && slot[k] >= 0) out[slot[k]] = f;
        k++;
        if (term < end && *term == delim) {
            q = term + 1;
            continue;
        }
        rec->used = (size_t)(term - p) + (term < end);
        rec->nfields = k;
        rec->newlines = nl;
        rec->empty = k == 1 && !f.quoted && f.n == 0;
        return SCAN_OK;
    }
}

/* Collapses the doubled quotes of a quoted field in place. */
static void unescape(field *f) {
    if (!f->quoted) return;
    size_t w = 0;
    for (size_t i = 0; i < f->n; i++) {
        f->s[w++] = f->s[i];
        if (f->s[i] == '"') i++;
    }
    f->n = w;
}

/* ---- ingestion -------------------------------------------------------- */

typedef struct events {
    int32_t *user, *item;
    int64_t *time; /* microseconds */
    int64_t n, cap;
} events;

typedef struct ctx {
    const br_prepare_options *o;
    br_prepare_stats *st;
    reader r;
    intern users, items;
    events ev;
} ctx;

/* Printable, truncated copy of a value for messages. */
static const char *shown(char dst[SHOWN_TOKEN + 4], const char *s, size_t n) {
    size_t k = n < SHOWN_TOKEN ? n : SHOWN_TOKEN;
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    memcpy(dst + k, k < n ? "..." : "", k < n ? 4 : 1);
    return dst;
}

/* Records a bad row; in strict mode it becomes the error (returns -1). */
__attribute__((format(printf, 4, 5))) static int bad_row(ctx *c, int64_t line, br_error *err,
                                                         const char *fmt, ...) {
    char msg[512];
    int k = snprintf(msg, sizeof msg, "%s:%" PRId64 ": ", c->r.name, line);
    va_list ap;
    va_start(ap, fmt);
    if (k > 0 && (size_t)k < sizeof msg) vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    if (c->o->strict) return br_errorf(err, "%s", msg);
    br_prepare_stats *st = c->st;
    if (st->bad_rows < BR_PREPARE_SHOWN_BAD) st->bad_lines[st->bad_rows] = line;
    if (st->bad_rows == 0) snprintf(st->first_bad, sizeof st->first_bad, "%s", msg);
    st->bad_rows++;
    return 0;
}

/* What makes an id unusable, or NULL: ids must not break the TSV mapping
 * files, and must be UTF-8 because the serving side answers in JSON. */
static const char *id_problem(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c == '\t' || c == '\n' || c == '\r' || c == '\0')
                return "contains a tab, line break or NUL byte";
            i++;
            continue;
        }
        /* Sequence length, and the bounds of the second byte that exclude
         * overlong forms, surrogates and code points past U+10FFFF. */
        size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                     : c >= 0xe0 && c <= 0xef ? 3
                     : c >= 0xf0 && c <= 0xf4 ? 4
                                              : 0;
        unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
        unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        if (len == 0 || n - i < len || s[i + 1] < lo || s[i + 1] > hi) return "is not valid UTF-8";
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80) return "is not valid UTF-8";
        i += len;
    }
    return NULL;
}

/* The check_* helpers return 0 (valid), 1 (a bad row, skipped) or -1 (a bad
 * row under --strict, or another error). */
static int check_id(ctx *c, int64_t line, const char *col, const char *s, size_t n,
                    br_error *err) {
    if (n == 0) return bad_row(c, line, err, "empty '%s'", col) ? -1 : 1;
    const char *why = id_problem((const unsigned char *)s, n);
    if (why) return bad_row(c, line, err, "'%s' %s", col, why) ? -1 : 1;
    return 0;
}

static int check_value(ctx *c, int64_t line, const char *col, const char *s, size_t n,
                       const char *why, br_error *err) {
    if (!why) return 0;
    char tok[SHOWN_TOKEN + 4];
    return bad_row(c, line, err, "'%s' value '%s': %s", col, shown(tok, s, n), why) ? -1 : 1;
}

static int check_time(ctx *c, int64_t line, const char *s, size_t n, int64_t *t, br_error *err) {
    return check_value(c, line, c->o->time_col, s, n, br_parse_timestamp(s, n, t), err);
}

static int check_rating(ctx *c, int64_t line, const char *s, size_t n, double *v, br_error *err) {
    return check_value(c, line, c->o->rating_col, s, n, br_parse_number(s, n, v), err);
}

/* Appends a validated row (dropped below min_rating). */
static int add_event(ctx *c, const char *u, size_t un, const char *i, size_t in, int64_t t,
                     double rating, br_error *err) {
    if (c->o->use_min_rating && rating < c->o->min_rating) {
        c->st->below_min_rating++;
        return 0;
    }
    events *ev = &c->ev;
    if (ev->n == ev->cap) {
        int64_t cap = ev->cap;
        if (grow_array((void **)&ev->user, &cap, sizeof *ev->user, err) < 0) return -1;
        cap = ev->cap;
        if (grow_array((void **)&ev->item, &cap, sizeof *ev->item, err) < 0) return -1;
        cap = ev->cap;
        if (grow_array((void **)&ev->time, &cap, sizeof *ev->time, err) < 0) return -1;
        ev->cap = cap;
    }
    /* Both lookups miss the cache; start both loads before waiting on one. */
    uint64_t hu = hash_bytes(u, un), hi = hash_bytes(i, in);
    intern_prefetch(&c->users, hu);
    intern_prefetch(&c->items, hi);
    int32_t ui = intern_get(&c->users, u, un, hu, "user", err);
    int32_t ii = ui < 0 ? -1 : intern_get(&c->items, i, in, hi, "item", err);
    if (ii < 0) return -1;
    ev->user[ev->n] = ui;
    ev->item[ev->n] = ii;
    ev->time[ev->n] = t;
    ev->n++;
    return 0;
}

/* ---- CSV driver ------------------------------------------------------- */

/* Scans the record at the reader's position, refilling as needed. Returns
 * SCAN_OK/SCAN_BAD, or -1 on a read error. The scan only ever sees the first
 * max_record bytes, so a record that does not end within them is TOO_LONG
 * whatever the buffer size. */
static int scan_next(reader *r, char delim, const int32_t *slot, int64_t nslot, field *out,
                     csv_rec *rec, br_error *err) {
    for (;;) {
        size_t avail = r->len - r->pos;
        bool clipped = avail > r->max_record;
        char *p = r->buf + r->pos;
        int rc = csv_scan(p, p + (clipped ? r->max_record : avail), r->eof && !clipped, delim,
                          slot, nslot, out, rec);
        if (rc == SCAN_MORE && clipped) {
            rec->problem = TOO_LONG;
            return SCAN_BAD;
        }
        if (rc != SCAN_MORE) return rc;
        if (reader_fill(r, err) < 0) return -1;
    }
}

/* Most frequent of tab , ; | outside quotes on the header's first line. */
static char detect_delimiter(const char *s, const char *e) {
    static const char cand[] = "\t,;|";
    int64_t count[4] = {0};
    bool quoted = false;
    for (; s < e && *s != '\n'; s++) {
        if (*s == '"') quoted = !quoted;
        const char *hit = quoted || !*s ? NULL : strchr(cand, *s);
        if (hit) count[hit - cand]++;
    }
    int best = 0;
    for (int i = 1; i < 4; i++)
        if (count[i] > count[best]) best = i;
    return count[best] ? cand[best] : 0;
}

/* Fills until buf[pos..] holds a whole line, more than max_record bytes, or
 * the rest of the input. */
static int fill_line(reader *r, br_error *err) {
    while (!r->eof && r->len - r->pos <= r->max_record &&
           !memchr(r->buf + r->pos, '\n', r->len - r->pos))
        if (reader_fill(r, err) < 0) return -1;
    return 0;
}

static int list_columns(ctx *c, const field *h, int64_t n, const char *missing, br_error *err) {
    char cols[700];
    size_t k = 0;
    cols[0] = '\0';
    for (int64_t i = 0; i < n && k + 4 < sizeof cols; i++) {
        char tok[SHOWN_TOKEN + 4];
        int w = snprintf(cols + k, sizeof cols - k, "%s'%s'", i ? ", " : "",
                         shown(tok, h[i].s, h[i].n));
        k += w > 0 ? (size_t)w : 0;
    }
    if (k >= sizeof cols) memcpy(cols + sizeof cols - 4, "...", 4);
    return br_errorf(err, "%s: no column '%s' in the header (columns: %s)", c->r.name, missing,
                     cols);
}

enum { COL_USER, COL_ITEM, COL_TIME, COL_RATING, N_COLS };

/* Reads the header: detects the delimiter, maps the wanted columns to
 * slots. *slot_out has one entry per header column. */
static int read_header(ctx *c, char *delim, int32_t **slot_out, int64_t *ncols_out,
                       br_error *err) {
    reader *r = &c->r;
    const br_prepare_options *o = c->o;
    size_t window;
    bool bom_checked = false;
    for (;;) {
        if (fill_line(r, err) < 0) return -1;
        if (!bom_checked) {
            bom_checked = true;
            if (r->len >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0) {
                r->pos += 3; /* a UTF-8 byte order mark; refill past it */
                continue;
            }
        }
        /* Everything here sees what the scan will see: at most max_record
         * bytes, so the result does not depend on the buffer size. */
        size_t avail = r->len - r->pos;
        window = avail < r->max_record ? avail : r->max_record;
        const char *s = r->buf + r->pos, *e = s + window;
        while (s < e && (*s == ' ' || *s == '\r')) s++;
        if (s == e && r->eof && avail <= r->max_record)
            return br_errorf(err, "%s: empty file (no header row)", r->name);
        if (s == e || *s != '\n') break;
        r->pos = (size_t)(s + 1 - r->buf); /* blank line before the header */
        r->line++;
    }
    const char *head = r->buf + r->pos, *nl = memchr(head, '\n', window);
    *delim = o->delimiter ? o->delimiter : detect_delimiter(head, head + window);
    if (!*delim) {
        char tok[SHOWN_TOKEN + 4];
        return br_errorf(err, "%s:%" PRId64 ": no delimiter (tab , ; |) in the header '%s'; "
                              "give --delimiter",
                         r->name, r->line, shown(tok, head, nl ? (size_t)(nl - head) : window));
    }

    /* Once to count the columns, once to collect them: slot = identity. */
    csv_rec rec = {0};
    int rc = scan_next(r, *delim, NULL, 0, NULL, &rec, err);
    if (rc < 0) return -1;
    if (rc == SCAN_BAD && rec.problem == TOO_LONG)
        return br_errorf(err, "%s:%" PRId64 ": header longer than %zu bytes", r->name, r->line,
                         r->max_record);
    if (rc == SCAN_BAD)
        return br_errorf(err, "%s:%" PRId64 ": header: %s", r->name, r->line, rec.problem);
    int64_t n = rec.nfields;
    int32_t *slot = br_xmalloc((size_t)n * sizeof *slot, err);
    field *h = br_xmalloc((size_t)n * sizeof *h, err);
    if (!slot || !h) {
        free(slot);
        free(h);
        return -1;
    }
    for (int64_t k = 0; k < n; k++) slot[k] = (int32_t)k;
    csv_scan(r->buf + r->pos, r->buf + r->pos + rec.used, true, *delim, slot, n, h, &rec);
    for (int64_t k = 0; k < n; k++) {
        unescape(&h[k]);
        slot[k] = -1;
    }
    const char *want[N_COLS] = {o->user_col, o->item_col, o->time_col, o->rating_col};
    int ret = 0;
    for (int w = 0; w < N_COLS && ret == 0; w++) {
        if (!want[w]) continue;
        size_t wl = strlen(want[w]);
        int64_t found = -1;
        for (int64_t k = 0; k < n && ret == 0; k++) {
            if (h[k].n != wl || memcmp(h[k].s, want[w], wl) != 0) continue;
            if (found >= 0)
                ret = br_errorf(err, "%s:%" PRId64 ": column '%s' appears twice in the header",
                                r->name, r->line, want[w]);
            found = k;
        }
        if (ret == 0 && found < 0) ret = list_columns(c, h, n, want[w], err);
        if (ret == 0) slot[found] = w;
    }
    free(h);
    if (ret < 0) {
        free(slot);
        return -1;
    }
    r->pos += rec.used;
    r->line += 1 + rec.newlines;
    *slot_out = slot;
    *ncols_out = n;
    return 0;
}

static int csv_row(ctx *c, int64_t line, field *f, br_error *err) {
    const br_prepare_options *o = c->o;
    for (int k = 0; k < N_COLS; k++) unescape(&f[k]);
    int64_t t = 0;
    double rating = 0;
    int rc = check_id(c, line, o->user_col, f[COL_USER].s, f[COL_USER].n, err);
    if (!rc) rc = check_id(c, line, o->item_col, f[COL_ITEM].s, f[COL_ITEM].n, err);
    if (!rc) rc = check_time(c, line, f[COL_TIME].s, f[COL_TIME].n, &t, err);
    if (!rc && o->rating_col)
        rc = check_rating(c, line, f[COL_RATING].s, f[COL_RATING].n, &rating, err);
    if (rc) return rc < 0 ? -1 : 0;
    return add_event(c, f[COL_USER].s, f[COL_USER].n, f[COL_ITEM].s, f[COL_ITEM].n, t, rating,
                     err);
}

static int read_csv(ctx *c, br_error *err) {
    reader *r = &c->r;
    char delim = 0;
    int32_t *slot = NULL;
    int64_t ncols = 0;
    if (read_header(c, &delim, &slot, &ncols, err) < 0) return -1;
    int ret = 0;
    while (ret == 0) {
        if (r->pos == r->len) {
            if (r->eof) break;
            ret = reader_fill(r, err);
            continue;
        }
        field f[N_COLS] = {{0}};
        csv_rec rec = {0};
        int64_t line = r->line;
        int rc = scan_next(r, delim, slot, ncols, f, &rec, err);
        if (rc < 0) {
            ret = -1;
        } else if (rc == SCAN_BAD) {
            c->st->rows++;
            if (rec.problem == TOO_LONG)
                ret = bad_row(c, line, err, "row longer than %zu bytes (an unterminated quote?)",
                              r->max_record);
            else
                ret = bad_row(c, line, err, "%s", rec.problem);
            if (ret == 0) ret = reader_skip_line(r, err);
        } else {
            r->pos += rec.used;
            r->line += 1 + rec.newlines;
            if (rec.empty) continue;
            c->st->rows++;
            if (rec.nfields != ncols)
                ret = bad_row(c, line, err, "expected %" PRId64 " fields, found %" PRId64, ncols,
                              rec.nfields);
            else
                ret = csv_row(c, line, f, err);
        }
    }
    free(slot);
    return ret;
}

/* ---- JSON lines driver ------------------------------------------------ */

/* A JSON id: a string, or an integer in decimal. */
static int json_id(ctx *c, int64_t line, json_t *obj, const char *name, char *tmp, size_t tmp_n,
                   const char **s, size_t *n, br_error *err) {
    json_t *v = json_object_get(obj, name);
    if (!v) return bad_row(c, line, err, "missing field '%s'", name) ? -1 : 1;
    if (json_is_string(v)) {
        *s = json_string_value(v);
        *n = json_string_length(v);
    } else if (json_is_integer(v)) {
        *n = (size_t)snprintf(tmp, tmp_n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *s = tmp;
    } else {
        return bad_row(c, line, err, "field '%s' must be a string or an integer", name) ? -1 : 1;
    }
    return check_id(c, line, name, *s, *n, err);
}

static int json_row(ctx *c, int64_t line, json_t *obj, br_error *err) {
    const br_prepare_options *o = c->o;
    char ubuf[32], ibuf[32], tbuf[32];
    const char *u, *i;
    size_t un, in;
    int rc = json_id(c, line, obj, o->user_col, ubuf, sizeof ubuf, &u, &un, err);
    if (!rc) rc = json_id(c, line, obj, o->item_col, ibuf, sizeof ibuf, &i, &in, err);
    if (rc) return rc < 0 ? -1 : 0;

    /* Integers go through the same parser as text, for the same units. */
    json_t *tv = json_object_get(obj, o->time_col);
    int64_t t = 0;
    if (!tv) return bad_row(c, line, err, "missing field '%s'", o->time_col);
    if (json_is_integer(tv)) {
        int tn = snprintf(tbuf, sizeof tbuf, "%" JSON_INTEGER_FORMAT, json_integer_value(tv));
        rc = check_time(c, line, tbuf, (size_t)tn, &t, err);
    } else if (json_is_string(tv)) {
        rc = check_time(c, line, json_string_value(tv), json_string_length(tv), &t, err);
    } else {
        return bad_row(c, line, err, "field '%s' must be an integer or a string", o->time_col);
    }
    if (rc) return rc < 0 ? -1 : 0;

    double rating = 0;
    if (o->rating_col) {
        json_t *rv = json_object_get(obj, o->rating_col);
        if (!rv) return bad_row(c, line, err, "missing field '%s'", o->rating_col);
        if (json_is_number(rv))
            rating = json_number_value(rv);
        else if (json_is_string(rv))
            rc = check_rating(c, line, json_string_value(rv), json_string_length(rv), &rating,
                              err);
        else
            return bad_row(c, line, err, "field '%s' must be a number", o->rating_col);
        if (rc) return rc < 0 ? -1 : 0;
    }
    return add_event(c, u, un, i, in, t, rating, err);
}

static int read_jsonl(ctx *c, br_error *err) {
    reader *r = &c->r;
    int ret = 0;
    while (ret == 0) {
        if (r->pos == r->len) {
            if (r->eof) break;
            ret = reader_fill(r, err);
            continue;
        }
        /* A line must end within max_record bytes (or be the last one and
         * no longer), as in scan_next. */
        if (fill_line(r, err) < 0) return -1;
        char *s = r->buf + r->pos;
        size_t avail = r->len - r->pos;
        char *nl = memchr(s, '\n', avail < r->max_record ? avail : r->max_record);
        int64_t line = r->line;
        size_t n = nl ? (size_t)(nl - s) : avail;
        if (!nl && avail > r->max_record) {
            c->st->rows++;
            ret = bad_row(c, line, err, "row longer than %zu bytes", r->max_record);
            if (ret == 0) ret = reader_skip_line(r, err);
            continue;
        }
        r->pos += n + (nl != NULL);
        r->line++;
        if (line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
            s += 3; /* a UTF-8 byte order mark */
            n -= 3;
        }
        size_t b = 0;
        while (b < n && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r')) b++;
        if (b == n) continue;
        c->st->rows++;
        json_error_t je;
        json_t *obj = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
        if (!obj) {
            /* jansson quotes the offending input: keep the message printable. */
            for (char *t = je.text; *t; t++)
                if ((unsigned char)*t < 0x20 || (unsigned char)*t >= 0x7f) *t = '?';
            ret = bad_row(c, line, err, "malformed JSON: %s", je.text);
        } else if (!json_is_object(obj)) {
            ret = bad_row(c, line, err, "not a JSON object");
        } else {
            ret = json_row(c, line, obj, err);
        }
        json_decref(obj);
    }
    return ret;
}

/* ---- grouping, sorting, k-core ---------------------------------------- */

typedef struct tev {
    int64_t t;
    int32_t item;
} tev;

/* Stable merge sort by time (ties keep their order). tmp holds n/2+1. */
static void sort_by_time(tev *a, tev *tmp, int64_t n) {
    if (n <= 24) {
        for (int64_t i = 1; i < n; i++) {
            tev x = a[i];
            int64_t j = i;
            for (; j > 0 && a[j - 1].t > x.t; j--) a[j] = a[j - 1];
            a[j] = x;
        }
        return;
    }
    int64_t h = n / 2;
    sort_by_time(a, tmp, h);
    sort_by_time(a + h, tmp, n - h);
    if (a[h - 1].t <= a[h].t) return;
    memcpy(tmp, a, (size_t)h * sizeof *a);
    int64_t i = 0, j = h, k = 0;
    while (i < h && j < n) a[k++] = a[j].t < tmp[i].t ? a[j++] : tmp[i++];
    while (i < h) a[k++] = tmp[i++];
}

typedef struct seqs {
    int32_t n_users, n_items;
    int64_t *off;  /* n_users + 1 */
    int32_t *item; /* per user, chronological */
} seqs;

/* Counting sort by user (stable: file order), then each user by time. The
 * event arrays are freed as soon as they are consumed. */
static int group_and_sort(events *ev, int32_t n_users, seqs *s, br_error *err) {
    int64_t n = ev->n;
    s->off = br_xcalloc((size_t)n_users + 1, sizeof *s->off, err);
    int64_t *next = br_xmalloc((size_t)n_users * sizeof *next, err);
    tev *g = br_xmalloc((size_t)n * sizeof *g, err);
    if (!s->off || !next || !g) goto fail;
    for (int64_t e = 0; e < n; e++) s->off[ev->user[e] + 1]++;
    for (int32_t u = 0; u < n_users; u++) s->off[u + 1] += s->off[u];
    memcpy(next, s->off, (size_t)n_users * sizeof *next);
    for (int64_t e = 0; e < n; e++) g[next[ev->user[e]]++] = (tev){ev->time[e], ev->item[e]};
    free(next);
    next = NULL;
    free(ev->user);
    free(ev->item);
    free(ev->time);
    memset(ev, 0, sizeof *ev);

    int64_t longest = 0;
    for (int32_t u = 0; u < n_users; u++) {
        int64_t len = s->off[u + 1] - s->off[u];
        longest = len > longest ? len : longest;
    }
    tev *tmp = br_xmalloc((size_t)(longest / 2 + 1) * sizeof *tmp, err);
    if (!tmp) goto fail;
    for (int32_t u = 0; u < n_users; u++) {
        tev *a = g + s->off[u];
        int64_t len = s->off[u + 1] - s->off[u], k = 1;
        while (k < len && a[k - 1].t <= a[k].t) k++;
        if (k < len) sort_by_time(a, tmp, len);
    }
    free(tmp);
    s->item = br_xmalloc((size_t)n * sizeof *s->item, err);
    if (!s->item) goto fail;
    for (int64_t e = 0; e < n; e++) s->item[e] = g[e].item;
    free(g);
    s->n_users = n_users;
    return 0;
fail:
    free(next);
    free(g);
    return -1;
}

/* Iterative k-core by peeling: a user or item is removed when fewer than
 * its threshold of interactions with surviving partners remain; each
 * removal decrements its partners once per shared interaction, so the
 * result is the same as repeating full filtering passes until stable, in
 * O(interactions). */
static int kcore(const seqs *s, int32_t min_user, int32_t min_item, uint8_t *ualive,
                 uint8_t *ialive, br_error *err) {
    int32_t nu = s->n_users, ni = s->n_items;
    int64_t n = s->off[nu];
    int64_t *udeg = br_xmalloc((size_t)nu * sizeof *udeg, err);
    int64_t *ideg = br_xcalloc((size_t)ni, sizeof *ideg, err);
    int64_t *ioff = br_xcalloc((size_t)ni + 1, sizeof *ioff, err);
    int32_t *iusers = br_xmalloc((size_t)n * sizeof *iusers, err);
    int64_t *stack = br_xmalloc(((size_t)nu + (size_t)ni) * sizeof *stack, err);
    int ret = -1;
    if (!udeg || !ideg || !ioff || !iusers || !stack) goto done;

    for (int64_t e = 0; e < n; e++) ioff[s->item[e] + 1]++;
    for (int32_t i = 0; i < ni; i++) {
        ideg[i] = ioff[i + 1];
        ioff[i + 1] += ioff[i];
    }
    int64_t *at = stack; /* the stack is empty yet: borrow it as cursors */
    memcpy(at, ioff, (size_t)ni * sizeof *at);
    for (int32_t u = 0; u < nu; u++)
        for (int64_t e = s->off[u]; e < s->off[u + 1]; e++) iusers[at[s->item[e]]++] = u;

    int64_t top = 0;
    for (int32_t u = 0; u < nu; u++) {
        udeg[u] = s->off[u + 1] - s->off[u];
        ualive[u] = udeg[u] >= min_user;
        if (!ualive[u]) stack[top++] = u;
    }
    for (int32_t i = 0; i < ni; i++) {
        ialive[i] = ideg[i] >= min_item;
        if (!ialive[i]) stack[top++] = (int64_t)nu + i;
    }
    /* Marked dead when pushed; partners are updated when popped. */
    while (top > 0) {
        int64_t x = stack[--top];
        if (x < nu) {
            for (int64_t e = s->off[x]; e < s->off[x + 1]; e++) {
                int32_t i = s->item[e];
                if (ialive[i] && --ideg[i] < min_item) {
                    ialive[i] = 0;
                    stack[top++] = (int64_t)nu + i;
                }
            }
        } else {
            int32_t i = (int32_t)(x - nu);
            for (int64_t e = ioff[i]; e < ioff[i + 1]; e++) {
                int32_t u = iusers[e];
                if (ualive[u] && --udeg[u] < min_user) {
                    ualive[u] = 0;
                    stack[top++] = u;
                }
            }
        }
    }
    ret = 0;
done:
    free(udeg);
    free(ideg);
    free(ioff);
    free(iusers);
    free(stack);
    return ret;
}

/* ---- output ----------------------------------------------------------- */

typedef struct wbuf {
    FILE *fp;
    size_t n;
    char b[1 << 16];
} wbuf;

static void wb_flush(wbuf *w) {
    if (w->n) fwrite(w->b, 1, w->n, w->fp);
    w->n = 0;
}

static void wb_bytes(wbuf *w, const char *s, size_t n) {
    if (w->n + n > sizeof w->b) wb_flush(w);
    if (n > sizeof w->b) {
        fwrite(s, 1, n, w->fp);
        return;
    }
    memcpy(w->b + w->n, s, n);
    w->n += n;
}

static void wb_int(wbuf *w, uint64_t v, char after) {
    char tmp[24];
    int k = (int)sizeof tmp;
    tmp[--k] = after;
    do tmp[--k] = (char)('0' + v % 10);
    while (v /= 10);
    wb_bytes(w, tmp + k, sizeof tmp - (size_t)k);
}

static int write_mapping(wbuf *w, const intern *t, const int32_t *orig, int64_t n,
                         br_error *err) {
    const char **strs = intern_by_index(t, err);
    if (!strs) return -1;
    for (int64_t k = 0; k < n; k++) {
        uint32_t len;
        const char *s = arena_str(strs[orig[k]], &len);
        wb_int(w, (uint64_t)k + 1, '\t');
        wb_bytes(w, s, len);
        wb_bytes(w, "\n", 1);
    }
    wb_flush(w);
    free(strs);
    return 0;
}

/* A directory where an output goes would fail its rename after the others
 * succeeded: refuse it before doing any work. */
static int check_out_paths(const char *out, br_error *err) {
    static const char *suffix[] = {"", ".users.tsv", ".items.tsv"};
    size_t n = strlen(out) + 16;
    char *path = br_xmalloc(n, err);
    if (!path) return -1;
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        struct stat sb;
        snprintf(path, n, "%s%s", out, suffix[k]);
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            rc = br_errorf(err, "%s: is a directory", path);
    }
    free(path);
    return rc;
}

static int make_parent_dir(const char *path, br_error *err) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    size_t n = (size_t)(slash - path);
    char *dir = br_xmalloc(n + 1, err);
    if (!dir) return -1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    int rc = br_mkdir_p(dir, err);
    free(dir);
    return rc;
}

/* Writes the three files to temporaries, flushes and fsyncs all of them,
 * and only then renames (sequence file last), so a failure (full disk)
 * replaces nothing. */
static int write_outputs(const ctx *c, const seqs *s, const uint8_t *ualive,
                         const uint8_t *ialive, br_error *err) {
    const char *out = c->o->out;
    const br_prepare_stats *st = c->st;
    size_t plen = strlen(out) + 16;
    char *users_path = br_xmalloc(plen, err), *items_path = br_xmalloc(plen, err);
    int32_t *new_item = br_xcalloc((size_t)s->n_items, sizeof *new_item, err);
    int32_t *item_orig = br_xmalloc((size_t)st->items_after * sizeof *item_orig, err);
    int32_t *user_orig = br_xmalloc((size_t)st->users_after * sizeof *user_orig, err);
    wbuf *w = br_xmalloc(sizeof *w, err);
    br_atomic_file af[3];
    int opened = 0, committed = 0, ret = -1;
    if (!users_path || !items_path || !new_item || !item_orig || !user_orig || !w ||
        make_parent_dir(out, err) < 0)
        goto done;
    snprintf(users_path, plen, "%s.users.tsv", out);
    snprintf(items_path, plen, "%s.items.tsv", out);
    const char *names[3] = {items_path, users_path, out};
    for (; opened < 3; opened++)
        if (br_atomic_open(&af[opened], names[opened], err) < 0) goto done;

    w->n = 0;
    w->fp = af[2].fp;
    int32_t nu = 0, ni = 0;
    for (int32_t u = 0; u < s->n_users; u++) {
        if (!ualive[u]) continue;
        user_orig[nu++] = u;
        wb_int(w, (uint64_t)nu, ' ');
        int64_t last = s->off[u + 1] - 1;
        while (!ialive[s->item[last]]) last--;
        for (int64_t e = s->off[u]; e <= last; e++) {
            int32_t i = s->item[e];
            if (!ialive[i]) continue;
            if (!new_item[i]) {
                item_orig[ni] = i;
                new_item[i] = ++ni;
            }
            wb_int(w, (uint64_t)new_item[i], e == last ? '\n' : ' ');
        }
    }
    wb_flush(w);
    w->fp = af[1].fp;
    if (write_mapping(w, &c->users, user_orig, nu, err) < 0) goto done;
    w->fp = af[0].fp;
    if (write_mapping(w, &c->items, item_orig, ni, err) < 0) goto done;
    for (int k = 0; k < 3; k++)
        if (fflush(af[k].fp) != 0 || ferror(af[k].fp) || fsync(fileno(af[k].fp)) != 0) {
            br_errorf(err, "%s: write failed: %s", names[k], strerror(errno));
            goto done;
        }
    for (; committed < 3; committed++)
        if (br_atomic_commit(&af[committed], err) < 0) goto done;
    ret = 0;
done:
    /* Safe on a file whose commit failed. */
    for (int k = committed; k < opened; k++) br_atomic_abort(&af[k]);
    free(users_path);
    free(items_path);
    free(new_item);
    free(item_orig);
    free(user_orig);
    free(w);
    return ret;
}

/* ---- driver ----------------------------------------------------------- */

static int check_options(const br_prepare_options *o, br_error *err) {
    if (!o->input) return br_errorf(err, "no input file");
    if (!o->user_col || !o->item_col || !o->time_col) return br_errorf(err, "column names missing");
    if (o->use_min_rating && !o->rating_col)
        return br_errorf(err, "a minimum rating needs a rating column");
    const char *cols[N_COLS] = {o->user_col, o->item_col, o->time_col, o->rating_col};
    for (int a = 0; a < N_COLS; a++)
        for (int b = a + 1; b < N_COLS; b++)
            if (cols[a] && cols[b] && strcmp(cols[a], cols[b]) == 0)
                return br_errorf(err, "column '%s' is given for two roles", cols[a]);
    if (o->format == BR_LOG_CSV &&
        (o->delimiter == '"' || o->delimiter == '\n' || o->delimiter == '\r'))
        return br_errorf(err, "the delimiter cannot be a quote or a line break");
    /* The leave-one-out split needs 3 items per user (dataset.h). */
    if (o->min_user < 3)
        return br_errorf(err, "min_user is %d; basrec sequences need at least 3 items per user",
                         o->min_user);
    if (o->min_item < 1)
        return br_errorf(err, "min_item is %d; it must be at least 1", o->min_item);
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int br_prepare(const br_prepare_options *o, br_prepare_stats *st, br_error *err) {
    double t0 = now_seconds();
    memset(st, 0, sizeof *st);
    if (check_options(o, err) < 0 || (o->out && check_out_paths(o->out, err) < 0)) return -1;
    ctx c = {.o = o, .st = st};
    reader *r = &c.r;
    bool is_stdin = strcmp(o->input, "-") == 0;
    r->name = is_stdin ? "<stdin>" : o->input;
    r->max_record = o->max_record ? o->max_record : DEFAULT_MAX_RECORD;
    r->cap = o->buffer_size ? o->buffer_size : DEFAULT_BUFFER;
    r->line = 1;
    r->fd = is_stdin ? 0 : open(o->input, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) return br_errorf(err, "%s: cannot open: %s", o->input, strerror(errno));
    /* A small file needs no large buffer (+1: its end is seen in one read). */
    struct stat sb;
    if (fstat(r->fd, &sb) == 0 && S_ISREG(sb.st_mode) && (size_t)sb.st_size < r->cap)
        r->cap = (size_t)sb.st_size + 1;
    seqs s = {0};
    uint8_t *ualive = NULL, *ialive = NULL;
    int ret = -1;
    r->buf = br_xmalloc(r->cap, err);
    if (!r->buf) goto done;
    if ((o->format == BR_LOG_JSONL ? read_jsonl(&c, err) : read_csv(&c, err)) < 0) goto done;
    free(r->buf);
    r->buf = NULL;

    st->users_before = c.users.n;
    st->items_before = c.items.n;
    st->interactions_before = c.ev.n;
    if (c.ev.n == 0) {
        if (st->bad_rows)
            br_errorf(err, "%s: no valid rows (%" PRId64 " bad; first: %s)", r->name,
                      st->bad_rows, st->first_bad);
        else
            br_errorf(err, "%s: no valid rows", r->name);
        goto done;
    }
    if (group_and_sort(&c.ev, (int32_t)c.users.n, &s, err) < 0) goto done;
    s.n_items = (int32_t)c.items.n;
    ualive = br_xmalloc((size_t)s.n_users, err);
    ialive = br_xmalloc((size_t)s.n_items, err);
    if (!ualive || !ialive || kcore(&s, o->min_user, o->min_item, ualive, ialive, err) < 0)
        goto done;
    for (int32_t i = 0; i < s.n_items; i++) st->items_after += ialive[i];
    for (int32_t u = 0; u < s.n_users; u++) {
        if (!ualive[u]) continue;
        st->users_after++;
        for (int64_t e = s.off[u]; e < s.off[u + 1]; e++)
            st->interactions_after += ialive[s.item[e]];
    }
    if (st->users_after == 0) {
        br_errorf(err, "%s: no users left after k-core filtering (%" PRId64 " users, %" PRId64
                       " items, %" PRId64 " interactions before; min_user %d, min_item %d)",
                  r->name, st->users_before, st->items_before, st->interactions_before,
                  o->min_user, o->min_item);
        goto done;
    }
    if (o->out && write_outputs(&c, &s, ualive, ialive, err) < 0) goto done;
    ret = 0;
done:
    if (!is_stdin) close(r->fd);
    free(r->buf);
    free(c.ev.user);
    free(c.ev.item);
    free(c.ev.time);
    intern_free(&c.users);
    intern_free(&c.items);
    free(s.off);
    free(s.item);
    free(ualive);
    free(ialive);
    st->seconds = now_seconds() - t0;
    return ret;
}
