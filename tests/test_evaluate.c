/* Evaluation protocol on a tiny catalogue: every answer that is not a seen
 * item ranks within the top 20 (at most 20 unseen items remain), and an
 * answer that repeats a seen item is a miss. */
#include "testutil.h"

#include <math.h>

#include "data/dataset.h"
#include "eval/evaluate.h"
#include "models/model.h"

static void test_repeat_answers_are_misses(void **state) {
    (void)state;
    /* 25 items; users 3 and 4 end with an item they already have. */
    const char *text = "1 1 2 3 4 5 6\n"
                       "2 7 8 9 10 11 12\n"
                       "3 13 14 15 16 17 13\n"
                       "4 18 19 20 21 22 19\n"
                       "5 21 22 23 24 25 1\n";
    char path[64];
    assert_non_null(test_write_tmp(path, sizeof path, text));
    br_error err;
    br_dataset ds;
    assert_int_equal(br_dataset_load(path, &ds, &err), 0);
    br_model_config c;
    br_model_config_defaults(&c);
    c.n_items = ds.n_items;
    c.dim = 8;
    br_model m;
    assert_int_equal(br_model_create(&m, &c, &err), 0);
    br_model_init_weights(&m, 3);
    br_metrics met;
    assert_int_equal(br_evaluate(&m, &ds, BR_SPLIT_TEST, &met, &err), 0);
    /* 5 users, 25 items, 5 seen each: the 3 non-repeat answers are within
     * the remaining 20 items, the 2 repeats are misses. */
    assert_true(fabs(met.hr[2] - 3.0 / 5.0) < 1e-12);
    assert_true(met.hr[0] <= 3.0 / 5.0);
    br_model_free(&m);
    br_dataset_free(&ds);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_repeat_answers_are_misses)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
