/* Raw interaction logs to sequence files (docs/PREPARE.md).
 *
 * Reads a CSV/TSV log with a header row or a JSON-lines log, one
 * interaction (user, item, time[, rating]) per row, streaming through a
 * fixed buffer; sorts each user's interactions by time (ties keep file
 * order); applies iterative k-core filtering; numbers users and items 1..n
 * and writes, atomically,
 *   OUT             "user item item ..." per user, chronological
 *   OUT.users.tsv   "new_id<TAB>original_id" per user
 *   OUT.items.tsv   "new_id<TAB>original_id" per item
 * Users are numbered in order of first appearance in the log, items in order
 * of first appearance in OUT (item 1 is user 1's earliest item). */
#ifndef BR_DATA_PREPARE_H
#define BR_DATA_PREPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

typedef enum { BR_LOG_CSV, BR_LOG_JSONL } br_log_format;

typedef struct br_prepare_options {
    const char *input;       /* log path; "-" reads standard input */
    const char *out;         /* sequence file; NULL: filter and count only */
    br_log_format format;
    char delimiter;          /* CSV; 0: detect from the header (tab , ; |) */
    const char *user_col, *item_col, *time_col;
    const char *rating_col;  /* NULL: none */
    bool use_min_rating;     /* drop rows whose rating is below min_rating */
    double min_rating;
    int32_t min_user, min_item; /* k-core thresholds (interactions, repeats count) */
    bool strict;             /* the first bad row is a fatal error */
    size_t buffer_size;      /* initial read buffer (at most the file's size + 1); 0: 4 MiB */
    size_t max_record;       /* longest accepted row in bytes, line break included; 0: 1 MiB */
} br_prepare_options;

/* Columns user_id, item_id, timestamp; CSV with a detected delimiter; 5-core. */
void br_prepare_defaults(br_prepare_options *o);

#define BR_PREPARE_SHOWN_BAD 5

typedef struct br_prepare_stats {
    int64_t rows;              /* non-empty data rows read (header excluded) */
    int64_t bad_rows;
    int64_t bad_lines[BR_PREPARE_SHOWN_BAD]; /* line numbers of the first bad rows */
    char first_bad[512];       /* "file:line: problem" of the first bad row */
    int64_t below_min_rating;  /* valid rows dropped by min_rating */
    int64_t users_before, items_before, interactions_before;
    int64_t users_after, items_after, interactions_after;
    double seconds;
} br_prepare_stats;

/* Runs the whole preparation. Returns 0, or -1 with err set ("file:line:
 * problem" for bad input) and no output file created or replaced. */
int br_prepare(const br_prepare_options *o, br_prepare_stats *st, br_error *err);

/* Parses a timestamp into microseconds since 1970-01-01 UTC. Accepted:
 * decimal unix time "-?D+(.D+)?", in seconds when |integer part| < 1e11,
 * otherwise in milliseconds; ISO-8601 "YYYY-MM-DD" or "YYYY-MM-DD[T ]HH:MM
 * [:SS[.F+]][Z|+HH:MM|+HHMM|+HH]" (no zone: UTC). Returns NULL, or what is
 * wrong ("month out of range", ...). */
const char *br_parse_timestamp(const char *s, size_t n, int64_t *usec);

/* Strict decimal number ("-1.5", "4", "3e2"; no spaces, inf or nan). */
const char *br_parse_number(const char *s, size_t n, double *out);

#endif
