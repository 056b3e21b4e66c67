/* basrec serve: an HTTP JSON service over a checkpoint (docs/SERVING.md),
 * and the request format it shares with `basrec recommend --stdin`.
 *
 * HTTP is libmicrohttpd's: a pool of worker threads, each running the
 * handler of its connections to completion; recommendations go through the
 * public API, whose model hands every concurrent call a workspace of its
 * own (src/api/basrec_api.c). SIGTERM/SIGINT stop accepting connections,
 * let the requests in flight finish (up to DRAIN_SECONDS), free everything
 * and exit 0. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "cli/args.h"
#include "cli/cli.h"

enum {
    MAX_BODY = 1 << 20, /* bytes of a request body; more is 413 */
    MAX_K = 1000,       /* largest k a client may ask the service for */
    DRAIN_SECONDS = 10, /* how long shutdown waits for requests in flight */
    IDLE_TIMEOUT = 30,  /* seconds before an idle connection is closed */
};

/* ---- Requests (shared with recommend --stdin) ------------------------------ */

/* {"error": message}; NULL when out of memory. */
static char *error_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *error_json(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s}", "error", msg);
    if (!o) {
        /* Client bytes quoted in the message (a path, an id cut short) may
         * not be UTF-8, which JSON strings must be. */
        for (char *c = msg; *c; c++)
            if ((unsigned char)*c >= 0x80) *c = '?';
        o = json_pack("{s:s}", "error", msg);
    }
    char *s = o ? json_dumps(o, 0) : NULL;
    json_decref(o);
    return s;
}

#define BAD_REQUEST(...) (snprintf(msg, msglen, __VA_ARGS__), 400)

/* An id from the request: a positive JSON integer, or with a map an
 * original id (a string, or an integer standing for its decimal form).
 * Returns the model's (or data file's) id, or -1 with a message. */
static int64_t request_id(const json_t *v, const basrec_idmap *map, const char *what, char *msg,
                          size_t msglen) {
    if (!map) {
        const json_int_t id = json_is_integer(v) ? json_integer_value(v) : 0;
        if (id < 1) snprintf(msg, msglen, "%s must be a positive integer id", what);
        return id < 1 ? -1 : id;
    }
    char num[32];
    const char *orig = json_is_string(v) ? json_string_value(v) : num;
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (!json_is_string(v)) {
        snprintf(msg, msglen, "%s must be an original id (a string)", what);
        return -1;
    }
    int64_t id = basrec_idmap_id(map, orig);
    if (id < 0) snprintf(msg, msglen, "%s: unknown id '%.80s'", what, orig);
    return id;
}

/* The history of a "user" request: the user's whole sequence in ctx->data. */
static int user_history(const cli_rec_ctx *ctx, const json_t *user, const int32_t **hist,
                        int32_t *n, char *msg, size_t msglen) {
    if (!ctx->data) {
        snprintf(msg, msglen, "'user' needs user histories (start with --data)");
        return -1;
    }
    const int64_t id = request_id(user, ctx->users, "user", msg, msglen);
    if (id < 0) return -1;
    const int32_t row = br_dataset_find_user(ctx->data, id);
    if (row < 0) {
        snprintf(msg, msglen, "user %lld is not in %s", (long long)id, ctx->data->path);
        return -1;
    }
    *hist = br_seq(ctx->data, row);
    *n = br_seq_len(ctx->data, row);
    return 0;
}

/* The item ids of an "items" array, validated against the model. */
static int32_t *item_history(const cli_rec_ctx *ctx, const json_t *items, int32_t *n, char *msg,
                             size_t msglen) {
    if (!json_is_array(items)) {
        snprintf(msg, msglen, "'items' must be an array");
        return NULL;
    }
    const size_t len = json_array_size(items);
    if (len == 0) {
        snprintf(msg, msglen, "'items' is empty: a recommendation needs a history");
        return NULL;
    }
    int32_t *hist = malloc(len * sizeof(int32_t));
    if (!hist) {
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    const int32_t n_items = basrec_model_n_items(ctx->model);
    for (size_t i = 0; i < len; i++) {
        char what[48];
        snprintf(what, sizeof what, "items[%zu]", i);
        const json_t *v = json_array_get(items, i);
        int64_t id = request_id(v, ctx->items, what, msg, msglen);
        if (id >= 0 && (id < 1 || id > n_items)) {
            snprintf(msg, msglen, "%s = %lld is not an item of the model (1..%d)", what,
                     (long long)id, n_items);
            id = -1;
        }
        if (id < 0) {
            free(hist);
            return NULL;
        }
        hist[i] = (int32_t)id;
    }
    *n = (int32_t)len;
    return hist;
}

/* {"items": [...], "scores": [...]}, in original ids with an item map. */
static json_t *result_json(const cli_rec_ctx *ctx, const int32_t *items, const float *scores,
                           int got) {
    json_t *o = json_object(), *ji = json_array(), *js = json_array();
    int ok = o && ji && js;
    for (int i = 0; ok && i < got; i++) {
        /* cli_open_rec_ctx checked that every item has an original id. */
        json_t *id = ctx->items ? json_string(basrec_idmap_original(ctx->items, items[i]))
                                : json_integer(items[i]);
        /* A diverged model's NaN is no JSON number. */
        json_t *sc = isfinite(scores[i]) ? json_real(scores[i]) : json_null();
        ok = json_array_append_new(ji, id) == 0 && json_array_append_new(js, sc) == 0;
    }
    ok = ok && json_object_set(o, "items", ji) == 0 && json_object_set(o, "scores", js) == 0;
    json_decref(ji);
    json_decref(js);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int cli_recommend(const cli_rec_ctx *ctx, const json_t *req, json_t **result, char *msg,
                  size_t msglen) {
    *result = NULL;
    msg[0] = '\0';
    if (!json_is_object(req)) return BAD_REQUEST("the request must be a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)req, key, val) {
        if (strcmp(key, "items") != 0 && strcmp(key, "user") != 0 && strcmp(key, "k") != 0 &&
            strcmp(key, "exclude_seen") != 0)
            return BAD_REQUEST("unknown field '%.64s' (known: items, user, k, exclude_seen)", key);
    }
    const json_t *items = json_object_get(req, "items"), *user = json_object_get(req, "user");
    const json_t *jk = json_object_get(req, "k"), *jex = json_object_get(req, "exclude_seen");
    const int32_t n_items = basrec_model_n_items(ctx->model);
    int32_t k = ctx->default_k < n_items ? ctx->default_k : n_items;
    if (jk) {
        if (!json_is_integer(jk)) return BAD_REQUEST("'k' must be an integer");
        const json_int_t v = json_integer_value(jk);
        const int32_t hi = ctx->max_k < n_items ? ctx->max_k : n_items;
        if (v < 1 || v > hi)
            return BAD_REQUEST("k = %" JSON_INTEGER_FORMAT " is outside 1..%d (the %s)", v, hi,
                               hi == n_items ? "model's items" : "service's limit");
        k = (int32_t)v;
    }
    int exclude = ctx->exclude_seen;
    if (jex) {
        if (!json_is_boolean(jex)) return BAD_REQUEST("'exclude_seen' must be true or false");
        exclude = json_is_true(jex);
    }
    if (items && user) return BAD_REQUEST("give 'items' or 'user', not both");
    if (!items && !user) return BAD_REQUEST("missing field 'items'");

    const int32_t *hist = NULL;
    int32_t *owned = NULL, n = 0;
    if (user ? user_history(ctx, user, &hist, &n, msg, msglen) < 0
             : !(hist = owned = item_history(ctx, items, &n, msg, msglen)))
        return 400;
    int32_t *out_items = malloc((size_t)k * sizeof(int32_t));
    float *out_scores = malloc((size_t)k * sizeof(float));
    int got = -1;
    if (out_items && out_scores)
        got = basrec_recommend(ctx->model, hist, n, k, exclude, out_items, out_scores, msg, msglen);
    if (got >= 0 && !(*result = result_json(ctx, out_items, out_scores, got))) got = -1;
    /* Everything was validated above: a failure here is the server's. */
    if (got < 0 && (!out_items || !out_scores || !*msg)) snprintf(msg, msglen, "out of memory");
    free(owned);
    free(out_items);
    free(out_scores);
    return got < 0 ? 500 : 200;
}

int cli_recommend_body(const cli_rec_ctx *ctx, const char *body, size_t len, char **response) {
    json_error_t jerr;
    char msg[512] = "";
    json_t *result = NULL;
    int status = 400;
    json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req)
        snprintf(msg, sizeof msg, "malformed JSON (line %d, column %d): %s", jerr.line, jerr.column,
                 jerr.text);
    else
        status = cli_recommend(ctx, req, &result, msg, sizeof msg);
    *response = result ? json_dumps(result, JSON_REAL_PRECISION(6)) : error_json("%s", msg);
    json_decref(req);
    json_decref(result);
    return *response ? status : 500;
}

/* ---- HTTP ------------------------------------------------------------------ */

typedef struct server {
    cli_rec_ctx rec;
    const char *checkpoint;
    int threads;
    atomic_int in_flight; /* requests between their first callback and completion */
    atomic_int stopping;  /* after SIGTERM/SIGINT: responses close their connection */
    atomic_llong served;
} server;

/* Per-request state: the route and the body as it arrives. */
typedef struct request {
    int health; /* GET /health, else POST /recommend */
    char *body;
    size_t len, cap;
    int too_large;
} request;

/* Queues a JSON response; takes ownership of body (NULL: out of memory). */
static enum MHD_Result reply(server *s, struct MHD_Connection *c, int status, char *body,
                             const char *allow) {
    static const char oom[] = "{\"error\": \"out of memory\"}";
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (!body) status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (atomic_load(&s->stopping)) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static char *health_json(const server *s) {
    const basrec_model *m = s->rec.model;
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:b, s:b, s:i, s:I}", "status", "ok",
        "version", basrec_version(), "checkpoint", s->checkpoint, "model", basrec_model_backbone(m),
        "n_items", basrec_model_n_items(m), "dim", basrec_model_dim(m), "max_len",
        basrec_model_max_len(m), "threads", s->threads, "max_k", s->rec.max_k, "item_map",
        s->rec.items != NULL, "user_histories", s->rec.data != NULL, "workspaces",
        basrec_model_workspaces(m), "requests", (json_int_t)atomic_load(&s->served));
    char *str = o ? json_dumps(o, 0) : NULL;
    json_decref(o);
    return str;
}

/* The first call routes: errors are answered at once (MHD then closes the
 * connection instead of reading a body nobody needs). Later calls collect
 * the body; the last one (no data) answers, which keeps the connection
 * alive for the next request. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    server *s = cls;
    request *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        *con_cls = r;
        atomic_fetch_add(&s->in_flight, 1);
        const int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        if (strcmp(url, "/health") == 0) {
            r->health = 1;
            return get ? MHD_YES
                       : reply(s, c, MHD_HTTP_METHOD_NOT_ALLOWED,
                               error_json("%.16s /health: use GET", method), "GET, HEAD");
        }
        if (strcmp(url, "/recommend") != 0)
            return reply(s, c, MHD_HTTP_NOT_FOUND,
                         error_json("no such path '%.100s' (POST /recommend, GET /health)", url),
                         NULL);
        if (strcmp(method, "POST") != 0)
            return reply(s, c, MHD_HTTP_METHOD_NOT_ALLOWED,
                         error_json("%.16s /recommend: use POST", method), "POST");
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > MAX_BODY)
            return reply(s, c, MHD_HTTP_CONTENT_TOO_LARGE,
                         error_json("request body over %d bytes", MAX_BODY), NULL);
        return MHD_YES;
    }
    if (*upload_size) {
        /* A GET's body is ignored; chunked bodies have no length up front:
         * past the limit they are discarded and answered 413 at the end. */
        if (!r->health && !r->too_large && r->len + *upload_size > MAX_BODY) {
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
        }
        if (!r->health && !r->too_large) {
            if (r->len + *upload_size > r->cap) {
                size_t cap = r->cap ? r->cap : 4096;
                while (cap < r->len + *upload_size) cap *= 2;
                char *b = realloc(r->body, cap);
                if (!b) return MHD_NO;
                r->body = b;
                r->cap = cap;
            }
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->health) return reply(s, c, MHD_HTTP_OK, health_json(s), NULL);
    if (r->too_large)
        return reply(s, c, MHD_HTTP_CONTENT_TOO_LARGE,
                     error_json("request body over %d bytes", MAX_BODY), NULL);
    char *resp;
    int status = cli_recommend_body(&s->rec, r->body ? r->body : "", r->len, &resp);
    if (status == 200)
        atomic_fetch_add(&s->served, 1);
    else if (status >= 500)
        fprintf(stderr, "basrec serve: %s\n", resp ? resp : "out of memory");
    return reply(s, c, status, resp, NULL);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    request *r = *con_cls;
    if (!r) return;
    free(r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    fprintf(stderr, "basrec serve: ");
    vfprintf(stderr, fmt, ap);
}

/* Stops accepting, waits for the requests in flight, stops the workers. */
static void drain_and_stop(server *s, struct MHD_Daemon *d) {
    atomic_store(&s->stopping, 1);
    /* The listening socket stays open until the daemon has stopped: its
     * threads may still poll it (microhttpd.h, MHD_quiesce_daemon). */
    MHD_socket fd = MHD_quiesce_daemon(d);
    const struct timespec tick = {0, 5 * 1000 * 1000};
    for (int i = 0; i < DRAIN_SECONDS * 200 && atomic_load(&s->in_flight) > 0; i++)
        nanosleep(&tick, NULL);
    if (atomic_load(&s->in_flight) > 0)
        fprintf(stderr, "basrec serve: %d requests still in flight after %d s, closing them\n",
                atomic_load(&s->in_flight), DRAIN_SECONDS);
    MHD_stop_daemon(d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

int cli_check_item_map(const basrec_idmap *map, int32_t n_items, const char *path, char *msg,
                       size_t msglen) {
    for (int32_t i = 1; i <= n_items; i++) {
        if (!basrec_idmap_original(map, i)) {
            snprintf(msg, msglen, "%s has no original id for the model's item %d", path, i);
            return -1;
        }
    }
    return 0;
}

int cli_open_rec_ctx(cli_rec_ctx *ctx, const char *checkpoint, const char *item_map,
                     const char *user_map, const char *data) {
    char err[1024];
    br_error e;
    memset(ctx, 0, sizeof *ctx);
    if (!(ctx->model = basrec_model_load(checkpoint, err, sizeof err)) ||
        (item_map && !(ctx->items = basrec_idmap_load(item_map, err, sizeof err))) ||
        (user_map && !(ctx->users = basrec_idmap_load(user_map, err, sizeof err)))) {
        fprintf(stderr, "basrec: %s\n", err);
        cli_close_rec_ctx(ctx);
        return -1;
    }
    if (item_map && cli_check_item_map(ctx->items, basrec_model_n_items(ctx->model), item_map, err,
                                       sizeof err) < 0) {
        fprintf(stderr, "basrec: %s\n", err);
        cli_close_rec_ctx(ctx);
        return -1;
    }
    if (data) {
        br_dataset *ds = br_xmalloc(sizeof *ds, &e);
        if (!ds || br_dataset_load(data, ds, &e) < 0) {
            free(ds);
            fprintf(stderr, "basrec: %s\n", e.msg);
            cli_close_rec_ctx(ctx);
            return -1;
        }
        ctx->data = ds;
        if (ds->n_items > basrec_model_n_items(ctx->model)) {
            fprintf(stderr, "basrec: %s has item ids up to %d but %s knows %d items\n", data,
                    ds->n_items, checkpoint, basrec_model_n_items(ctx->model));
            cli_close_rec_ctx(ctx);
            return -1;
        }
    }
    return 0;
}

void cli_close_rec_ctx(cli_rec_ctx *ctx) {
    basrec_model_free((basrec_model *)ctx->model);
    basrec_idmap_free((basrec_idmap *)ctx->items);
    basrec_idmap_free((basrec_idmap *)ctx->users);
    if (ctx->data) {
        br_dataset_free((br_dataset *)ctx->data);
        free((br_dataset *)ctx->data);
    }
    memset(ctx, 0, sizeof *ctx);
}

int cmd_serve(int argc, char **argv) {
    /* Before any thread exists, so that every MHD and OpenMP thread
     * inherits the mask and the signals reach sigwait below. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *ckpt = NULL, *item_map = NULL, *user_map = NULL, *data = NULL, *host = "127.0.0.1";
    int32_t port = 8080, threads = (int32_t)sysconf(_SC_NPROCESSORS_ONLN);
    int help;
    opt_spec specs[] = {
        {"checkpoint", OPT_STR, &ckpt, "model checkpoint (.safetensors)", 0},
        {"item-map", OPT_STR, &item_map, "items in original ids: prepare's OUT.items.tsv", 0},
        {"data", OPT_STR, &data, "sequence file: allows {\"user\": id} requests", 0},
        {"user-map", OPT_STR, &user_map, "users in original ids: prepare's OUT.users.tsv", 0},
        {"host", OPT_STR, &host, "IPv4 address to listen on (0.0.0.0: all)", 0},
        {"port", OPT_INT, &port, "TCP port (0: any free port)", 0},
        {"threads", OPT_INT, &threads, "worker threads (default: all cores)", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("serve", &err);
    if (help) {
        args_print_help("usage: basrec serve --checkpoint FILE [--item-map FILE] [--port 8080]\n\n"
                        "HTTP JSON service: POST /recommend {\"items\": [...], \"k\": 10,\n"
                        "\"exclude_seen\": true} -> {\"items\": [...], \"scores\": [...]};\n"
                        "GET /health. SIGTERM or SIGINT stop it cleanly. See docs/SERVING.md.",
                        specs);
        return 0;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (!ckpt || (user_map && !data)) {
        fprintf(stderr, "basrec serve: %s (see --help)\n",
                !ckpt ? "--checkpoint is required" : "--user-map needs --data");
        return 2;
    }
    if (port < 0 || port > 65535 || threads < 1 || threads > 1024 ||
        inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "basrec serve: --port must be in 0..65535, --threads in 1..1024, "
                        "--host an IPv4 address\n");
        return 2;
    }
    /* Each worker is one thread: no BLAS or OpenMP teams inside requests. */
    cli_set_threads(1);
    server s = {.checkpoint = ckpt, .threads = threads};
    if (cli_open_rec_ctx(&s.rec, ckpt, item_map, user_map, data) < 0) return 1;
    s.rec.default_k =
        basrec_model_n_items(s.rec.model) < 10 ? basrec_model_n_items(s.rec.model) : 10;
    s.rec.max_k = MAX_K;
    s.rec.exclude_seen = 1;

    /* poll(), not MHD_USE_AUTO's epoll on Linux: quiescing an epoll daemon
     * whose own threads poll races with them for the removal of the listen
     * socket from the epoll set, and libmicrohttpd aborts the process when
     * it loses ("Failed to remove listen FD from epoll set", seen on
     * SIGTERM under load). With poll() quiescing only signals the workers. */
    unsigned flags =
        MHD_USE_POLL | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    /* One thread is MHD's internal polling thread itself, not a pool. */
    struct MHD_OptionItem pool[] = {{MHD_OPTION_THREAD_POOL_SIZE, threads, NULL},
                                    {MHD_OPTION_END, 0, NULL}};
    if (threads == 1) pool[0].option = MHD_OPTION_END;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, &s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_ARRAY, pool,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)IDLE_TIMEOUT, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "basrec serve: cannot listen on %s:%d\n", host, port);
        cli_close_rec_ctx(&s.rec);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "basrec serve: listening on http://%s:%u (threads: %d, model: %s, %d items)\n",
            host, info ? info->port : (unsigned)port, threads, basrec_model_backbone(s.rec.model),
            basrec_model_n_items(s.rec.model));

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0) continue;
    fprintf(stderr, "basrec serve: %s, finishing requests in flight\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    drain_and_stop(&s, d);
    fprintf(stderr, "basrec serve: stopped after %lld recommendations\n",
            (long long)atomic_load(&s.served));
    cli_close_rec_ctx(&s.rec);
    return 0;
}
