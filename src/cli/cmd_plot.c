/* basrec plot: learning curves from the JSON-lines metrics log of
 * `basrec train --metrics-log`, as a standalone SVG file with two panels:
 * the training loss (and BASRec's loss terms when logged), and the valid
 * HR@10 / NDCG@10 per epoch.
 *
 * A log may hold several runs one after another (appended runs, BASRec's
 * two stages): a run starts wherever the epoch does not increase. Runs are
 * drawn one after another on a shared x axis, separated by a dashed line. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "util/fileio.h"

enum { S_LOSS, S_MAIN, S_SSA, S_CSA, S_HR, S_NDCG, S_NDCG20, N_SERIES };

static const struct {
    const char *label, *color;
} series_style[N_SERIES] = {
    {"loss", "#1f77b4"},     {"loss_main", "#ff7f0e"},   {"loss_ssa", "#2ca02c"},
    {"loss_csa", "#d62728"}, {"valid HR@10", "#9467bd"}, {"valid NDCG@10", "#8c564b"},
    {"valid NDCG@20", NULL}, /* not drawn: locates the kept (best) epoch */
};

typedef struct point {
    double x; /* position on the shared axis */
    int run;  /* 0-based run index */
    int epoch;
    double v[N_SERIES]; /* NAN where the line does not have it */
} point;

typedef struct curves {
    point *p;
    int n, cap, n_runs;
    int has[N_SERIES];
} curves;

static double num_field(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static int read_log(const char *path, curves *c, br_error *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) return br_errorf(err, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (long lineno = 1; getline(&line, &cap, fp) > 0; lineno++) {
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        const json_t *ep = json_object_get(o, "epoch");
        const json_t *valid = json_object_get(o, "valid");
        if (!json_is_object(o) || !json_is_integer(ep) ||
            !json_is_number(json_object_get(o, "loss"))) {
            json_decref(o);
            rc = br_errorf(err, "%s:%ld: not a metrics line (a JSON object with epoch and loss)",
                           path, lineno);
            break;
        }
        if (c->n == c->cap) {
            int ncap = c->cap ? 2 * c->cap : 64;
            point *np = realloc(c->p, (size_t)ncap * sizeof *np);
            if (!np) {
                json_decref(o);
                rc = br_errorf(err, "out of memory");
                break;
            }
            c->p = np;
            c->cap = ncap;
        }
        point *pt = &c->p[c->n];
        pt->epoch = (int)json_integer_value(ep);
        const point *prev = c->n ? &c->p[c->n - 1] : NULL;
        pt->run = !prev ? 0 : pt->epoch > prev->epoch ? prev->run : prev->run + 1;
        pt->x = !prev                  ? pt->epoch
                : pt->run == prev->run ? prev->x + (pt->epoch - prev->epoch)
                                       : prev->x + 1;
        pt->v[S_LOSS] = num_field(o, "loss");
        pt->v[S_MAIN] = num_field(o, "loss_main");
        pt->v[S_SSA] = num_field(o, "loss_ssa");
        pt->v[S_CSA] = num_field(o, "loss_csa");
        pt->v[S_HR] = num_field(valid, "HR@10");
        pt->v[S_NDCG] = num_field(valid, "NDCG@10");
        pt->v[S_NDCG20] = num_field(valid, "NDCG@20");
        for (int s = 0; s < N_SERIES; s++) c->has[s] |= isfinite(pt->v[s]);
        c->n_runs = pt->run + 1;
        c->n++;
        json_decref(o);
    }
    free(line);
    if (!rc && ferror(fp)) rc = br_errorf(err, "%s: read error", path);
    fclose(fp);
    if (!rc && c->n == 0) rc = br_errorf(err, "%s: no metrics lines", path);
    return rc;
}

/* ---- SVG ---------------------------------------------------------------- */

enum { WIDTH = 960, HEIGHT = 720, LEFT = 80, RIGHT = 770, LEGEND_X = 790 };

typedef struct panel {
    double top, bottom;    /* pixel rows of the plot area */
    double x0, x1, y0, y1; /* data ranges */
} panel;

static double px(const panel *p, double x) {
    return LEFT + (x - p->x0) / (p->x1 - p->x0) * (RIGHT - LEFT);
}
static double py(const panel *p, double y) {
    return p->bottom - (y - p->y0) / (p->y1 - p->y0) * (p->bottom - p->top);
}

/* A 1-2-5 step giving about n intervals over [lo, hi]. */
static double nice_step(double lo, double hi, int n) {
    const double raw = (hi - lo) / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void xml_text(FILE *fp, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", fp); break;
        case '<': fputs("&lt;", fp); break;
        case '>': fputs("&gt;", fp); break;
        case '"': fputs("&quot;", fp); break;
        default: fputc(*s, fp);
        }
    }
}

/* Frame, grid, tick labels and axis titles. */
static void draw_axes(FILE *fp, const panel *p, const char *title, const char *xlabel,
                      const char *ylabel) {
    fprintf(fp, "<text x=\"%d\" y=\"%.1f\" font-size=\"15\" font-weight=\"bold\">%s</text>\n", LEFT,
            p->top - 10, title);
    const double ys = nice_step(p->y0, p->y1, 5);
    for (double y = ceil(p->y0 / ys) * ys; y <= p->y1 + ys * 1e-9; y += ys) {
        const double v = fabs(y) < ys * 1e-9 ? 0.0 : y;
        fprintf(fp, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n",
                LEFT, RIGHT, py(p, v), py(p, v));
        fprintf(fp, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%g</text>\n",
                LEFT - 6, py(p, v) + 4, v);
    }
    const double xs = fmax(1.0, nice_step(p->x0, p->x1, 8));
    for (double x = fmax(0.0, ceil(p->x0 / xs) * xs); x <= p->x1 + 1e-9; x += xs) {
        fprintf(fp, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
                px(p, x), px(p, x), p->bottom, p->bottom + 5);
        fprintf(fp,
                "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%g</text>\n",
                px(p, x), p->bottom + 19, x);
    }
    fprintf(
        fp,
        "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n",
        LEFT, p->top, RIGHT - LEFT, p->bottom - p->top);
    fprintf(fp, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%s</text>\n",
            (LEFT + RIGHT) / 2, p->bottom + 36, xlabel);
    fprintf(fp,
            "<text transform=\"translate(%d %.1f) rotate(-90)\" font-size=\"12\" "
            "text-anchor=\"middle\">%s</text>\n",
            LEFT - 52, (p->top + p->bottom) / 2, ylabel);
}

/* One series: a polyline per stretch of consecutive values within a run,
 * dots on the points when there are few. */
static void draw_series(FILE *fp, const panel *p, const curves *c, int s) {
    const int dots = c->n <= 80;
    for (int i = 0; i < c->n;) {
        while (i < c->n && !isfinite(c->p[i].v[s])) i++;
        if (i == c->n) break;
        fprintf(fp, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                series_style[s].color);
        const int run = c->p[i].run;
        for (; i < c->n && isfinite(c->p[i].v[s]) && c->p[i].run == run; i++)
            fprintf(fp, "%.1f,%.1f ", px(p, c->p[i].x), py(p, c->p[i].v[s]));
        fprintf(fp, "\"/>\n");
    }
    for (int i = 0; dots && i < c->n; i++) {
        if (isfinite(c->p[i].v[s]))
            fprintf(fp, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                    px(p, c->p[i].x), py(p, c->p[i].v[s]), series_style[s].color);
    }
}

static void draw_legend(FILE *fp, const panel *p, const curves *c, int first, int last) {
    double y = p->top + 14;
    for (int s = first; s <= last; s++) {
        if (!c->has[s]) continue;
        fprintf(fp,
                "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"3\"/>\n",
                LEGEND_X, LEGEND_X + 24, y - 4, y - 4, series_style[s].color);
        fprintf(fp, "<text x=\"%d\" y=\"%.1f\" font-size=\"13\">%s</text>\n", LEGEND_X + 30, y,
                series_style[s].label);
        y += 20;
    }
}

/* Dashed separators where a run starts; the kept epoch of each run (best
 * valid NDCG@20, as training keeps it) marked in the metrics panel. */
static void draw_runs(FILE *fp, const panel *p, const curves *c, int mark_best) {
    for (int i = 1; i < c->n; i++) {
        if (c->p[i].run == c->p[i - 1].run) continue;
        const double x = px(p, c->p[i].x - 0.5);
        fprintf(fp,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" "
                "stroke-dasharray=\"6 4\"/>\n",
                x, x, p->top, p->bottom);
        fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\">run %d%s</text>\n",
                x + 4, p->top + 12, c->p[i].run + 1,
                isfinite(c->p[i].v[S_MAIN]) ? " (BASRec)" : "");
    }
    for (int r = 0; mark_best && r < c->n_runs; r++) {
        int best = -1;
        for (int i = 0; i < c->n; i++) {
            if (c->p[i].run == r && isfinite(c->p[i].v[S_NDCG20]) &&
                (best < 0 || c->p[i].v[S_NDCG20] > c->p[best].v[S_NDCG20]))
                best = i;
        }
        if (best < 0) continue;
        const double x = px(p, c->p[best].x);
        fprintf(fp,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#444\" "
                "stroke-dasharray=\"2 3\"/>\n",
                x, x, p->top, p->bottom);
        fprintf(fp,
                "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#444\" "
                "text-anchor=\"middle\">best %d</text>\n",
                x, p->bottom - 6, c->p[best].epoch);
    }
}

/* Data range of series first..last, padded; [0, ...] for metrics. */
static void y_range(const curves *c, int first, int last, int from_zero, double *lo, double *hi) {
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < c->n; i++) {
        for (int s = first; s <= last; s++) {
            if (!isfinite(c->p[i].v[s])) continue;
            *lo = fmin(*lo, c->p[i].v[s]);
            *hi = fmax(*hi, c->p[i].v[s]);
        }
    }
    if (!isfinite(*lo)) *lo = 0, *hi = 1;
    if (from_zero) *lo = fmin(*lo, 0.0);
    const double pad = *hi > *lo ? 0.06 * (*hi - *lo) : fmax(fabs(*hi) * 0.1, 0.05);
    if (!from_zero || *lo < 0) *lo -= pad;
    *hi += pad;
}

static void write_svg(FILE *fp, const curves *c, const char *log_path) {
    /* A margin so the first and last points clear the frame. */
    const double x0 = c->p[0].x, x1 = c->p[c->n - 1].x, pad = fmax(0.5, 0.02 * (x1 - x0));
    panel loss = {60, 320, x0 - pad, x1 + pad, 0, 0};
    panel met = {400, 660, loss.x0, loss.x1, 0, 0};
    y_range(c, S_LOSS, S_CSA, 0, &loss.y0, &loss.y1);
    y_range(c, S_HR, S_NDCG, 1, &met.y0, &met.y1);
    fprintf(
        fp,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d "
        "%d\" "
        "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        WIDTH, HEIGHT, WIDTH, HEIGHT);
    fprintf(fp, "<text x=\"%d\" y=\"28\" font-size=\"18\">Training curves: ", LEFT);
    xml_text(fp, log_path);
    fprintf(fp, "</text>\n");
    const char *xlabel = c->n_runs > 1 ? "epoch (runs one after another)" : "epoch";
    draw_axes(fp, &loss, "Training loss", xlabel, "loss");
    draw_runs(fp, &loss, c, 0);
    for (int s = S_LOSS; s <= S_CSA; s++) draw_series(fp, &loss, c, s);
    draw_legend(fp, &loss, c, S_LOSS, S_CSA);
    draw_axes(fp, &met, "Validation (full ranking)", xlabel, "metric");
    draw_runs(fp, &met, c, 1);
    for (int s = S_HR; s <= S_NDCG; s++) draw_series(fp, &met, c, s);
    draw_legend(fp, &met, c, S_HR, S_NDCG);
    if (c->has[S_NDCG20])
        fprintf(
            fp,
            "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" fill=\"#444\">dotted: best valid</text>\n"
            "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" fill=\"#444\">NDCG@20 (kept)</text>\n",
            LEGEND_X, met.top + 64, LEGEND_X, met.top + 78);
    if (!c->has[S_HR] && !c->has[S_NDCG])
        fprintf(fp,
                "<text x=\"%d\" y=\"%.1f\" font-size=\"14\" fill=\"#666\" text-anchor=\"middle\">"
                "no validation results in the log</text>\n",
                (LEFT + RIGHT) / 2, (met.top + met.bottom) / 2);
    fprintf(fp, "</svg>\n");
}

int cmd_plot(int argc, char **argv) {
    const char *log = NULL, *out = NULL;
    int help;
    opt_spec specs[] = {
        {"metrics-log", OPT_STR, &log, "JSON-lines log written by train --metrics-log", 0},
        {"out", OPT_STR, &out, "SVG file to write", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("plot", &err);
    if (help) {
        args_print_help("usage: basrec plot --metrics-log FILE --out curves.svg\n\n"
                        "Draws the training loss and the valid HR@10/NDCG@10 per epoch as SVG.",
                        specs);
        return 0;
    }
    if (!log || !out) {
        fprintf(stderr, "basrec plot: --metrics-log and --out are required (see --help)\n");
        return 2;
    }
    curves c;
    memset(&c, 0, sizeof c);
    br_atomic_file af;
    int rc = read_log(log, &c, &err);
    if (rc == 0 && (rc = br_atomic_open(&af, out, &err)) == 0) {
        write_svg(af.fp, &c, log);
        rc = br_atomic_commit(&af, &err);
    }
    free(c.p);
    return rc < 0 ? cli_fail("plot", &err) : 0;
}
