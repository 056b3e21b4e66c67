/* basrec prepare: raw interaction log (CSV/TSV/JSON lines) to the sequence
 * file the other commands read, plus id mappings (docs/PREPARE.md). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "data/prepare.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* "," ";" "|" or any single character; "tab" or "\t" for a tab. */
static int parse_delimiter(const char *s, char *out) {
    if (strcmp(s, "tab") == 0 || strcmp(s, "\\t") == 0) {
        *out = '\t';
        return 0;
    }
    if (strlen(s) != 1) return -1;
    *out = s[0];
    return 0;
}

static void print_summary(const br_prepare_options *o, const br_prepare_stats *st) {
    if (st->bad_rows) {
        fprintf(stderr, "basrec prepare: warning: skipped %" PRId64 " bad row%s (line%s",
                st->bad_rows, st->bad_rows == 1 ? "" : "s", st->bad_rows == 1 ? "" : "s");
        int64_t shown = st->bad_rows < BR_PREPARE_SHOWN_BAD ? st->bad_rows : BR_PREPARE_SHOWN_BAD;
        for (int64_t i = 0; i < shown; i++)
            fprintf(stderr, "%s %" PRId64, i ? "," : "", st->bad_lines[i]);
        fprintf(stderr, "%s); first: %s\n", st->bad_rows > shown ? ", ..." : "", st->first_bad);
    }
    printf("read %" PRId64 " rows from %s: %" PRId64 " bad", st->rows,
           strcmp(o->input, "-") == 0 ? "standard input" : o->input, st->bad_rows);
    if (o->use_min_rating)
        printf(", %" PRId64 " rated below %g", st->below_min_rating, o->min_rating);
    printf("\nbefore filtering: %" PRId64 " users, %" PRId64 " items, %" PRId64 " interactions\n",
           st->users_before, st->items_before, st->interactions_before);
    printf("after k-core (users >= %d, items >= %d interactions): %" PRId64 " users, %" PRId64
           " items, %" PRId64 " interactions\n",
           o->min_user, o->min_item, st->users_after, st->items_after, st->interactions_after);
    if (o->out)
        printf("wrote %s, %s.users.tsv, %s.items.tsv in %.1f s\n", o->out, o->out, o->out,
               st->seconds);
    else
        printf("dry run: nothing written (%.1f s)\n", st->seconds);
}

int cmd_prepare(int argc, char **argv) {
    br_prepare_options o;
    br_prepare_defaults(&o);
    const char *format = NULL, *delimiter = NULL, *min_rating = NULL;
    int32_t k = 5, max_row = 1 << 20;
    int strict = 0, dry_run = 0, help;
    opt_spec specs[] = {
        {"input", OPT_STR, &o.input, "interaction log; - reads standard input", 0},
        {"out", OPT_STR, &o.out, "sequence file; also OUT.users.tsv, OUT.items.tsv (id maps)", 0},
        {"format", OPT_STR, &format, "csv, tsv or jsonl (default: from the file name)", 0},
        {"delimiter", OPT_STR, &delimiter, "a character or 'tab' (default: detected)", 0},
        {"user-col", OPT_STR, &o.user_col, "user id column / JSON field", 0},
        {"item-col", OPT_STR, &o.item_col, "item id column / JSON field", 0},
        {"time-col", OPT_STR, &o.time_col, "time column / JSON field (unix s, ms, ISO-8601)", 0},
        {"rating-col", OPT_STR, &o.rating_col, "rating column / JSON field (optional)", 0},
        {"min-rating", OPT_STR, &min_rating, "drop rows rated below this (needs --rating-col)", 0},
        {"k", OPT_INT, &k, "k-core threshold for both users and items", 0},
        {"min-user", OPT_INT, &o.min_user, "keep users with at least N interactions (default: --k)",
         0},
        {"min-item", OPT_INT, &o.min_item, "keep items with at least N interactions (default: --k)",
         0},
        {"strict", OPT_FLAG, &strict, "stop at the first bad row instead of skipping it", 0},
        {"dry-run", OPT_FLAG, &dry_run, "read, filter and report; write nothing", 0},
        {"max-row-bytes", OPT_INT, &max_row, "longest accepted row", 0},
        {NULL, 0, NULL, NULL, 0}};
    br_error err;
    if (args_parse(argc, argv, specs, &help, &err) < 0) return cli_fail("prepare", &err);
    if (help) {
        args_print_help(
            "usage: basrec prepare --input LOG --out FILE [--user-col S] [--item-col S]\n"
            "                      [--time-col S] [--rating-col S --min-rating X] [--k N]\n\n"
            "Turns an interaction log (CSV/TSV with a header row, or JSON lines) into a\n"
            "sequence file: each user's items by time (ties in file order), iterative\n"
            "k-core filtering, users and items renumbered 1..n. Bad rows are skipped and\n"
            "reported (--strict: the first one is an error). Outputs are written atomically.",
            specs);
        return 0;
    }
    if (!o.input || (!o.out && !dry_run)) {
        fprintf(stderr, "basrec prepare: --input and --out are required (see --help)\n");
        return 2;
    }
    if (dry_run) o.out = NULL;
    if (!args_find(specs, "min-user")->seen) o.min_user = k;
    if (!args_find(specs, "min-item")->seen) o.min_item = k;
    o.strict = strict;
    if (max_row < 16) {
        fprintf(stderr, "basrec prepare: --max-row-bytes must be at least 16\n");
        return 2;
    }
    o.max_record = (size_t)max_row;
    if (!format) format = ends_with(o.input, ".jsonl") || ends_with(o.input, ".ndjson") ||
                                  ends_with(o.input, ".json")
                              ? "jsonl"
                          : ends_with(o.input, ".tsv") ? "tsv"
                                                       : "csv";
    if (strcmp(format, "jsonl") == 0) {
        o.format = BR_LOG_JSONL;
    } else if (strcmp(format, "tsv") == 0) {
        o.delimiter = '\t';
    } else if (strcmp(format, "csv") != 0) {
        fprintf(stderr, "basrec prepare: --format must be csv, tsv or jsonl, not '%s'\n", format);
        return 2;
    }
    if (delimiter) {
        if (o.format == BR_LOG_JSONL) {
            fprintf(stderr, "basrec prepare: --delimiter does not apply to JSON lines\n");
            return 2;
        }
        if (parse_delimiter(delimiter, &o.delimiter) < 0) {
            fprintf(stderr,
                    "basrec prepare: --delimiter must be one character or 'tab', not '%s'\n",
                    delimiter);
            return 2;
        }
    }
    if (min_rating) {
        const char *why = br_parse_number(min_rating, strlen(min_rating), &o.min_rating);
        if (why) {
            fprintf(stderr, "basrec prepare: --min-rating '%s': %s\n", min_rating, why);
            return 2;
        }
        o.use_min_rating = true;
    }
    br_prepare_stats st;
    if (br_prepare(&o, &st, &err) < 0) return cli_fail("prepare", &err);
    print_summary(&o, &st);
    return 0;
}
