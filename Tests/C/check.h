/* What the C tests share: CHECK and CHECK_STATUS (counting into passed and failed, saying
 * what failed and where) and sleep_ms. Included once by each test program. */
#ifndef PETREL_TEST_CHECK_H
#define PETREL_TEST_CHECK_H

#include <petrel.h>
#include <stdio.h>
#include <time.h>

static int passed, failed;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            passed++;                                                                \
        } else {                                                                     \
            failed++;                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)
#define CHECK_STATUS(expr, want)                                                                              \
    do {                                                                                                      \
        petrel_status s_ = (expr);                                                                            \
        if (s_ == (want)) {                                                                                   \
            passed++;                                                                                         \
        } else {                                                                                              \
            failed++;                                                                                         \
            fprintf(stderr, "%s:%d: %s returned %d (%s), wanted %d\n", __FILE__, __LINE__, #expr, (int)s_, \
                    petrel_strerror(s_), (int)(want));                                                        \
        }                                                                                                     \
    } while (0)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#endif
