/* Minimal test helpers: CHECK counts failures and keeps going. */
#ifndef ARCTIC_TEST_CHECK_H
#define ARCTIC_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		check_count++;                                               \
		if (!(cond)) {                                               \
			check_failures++;                                    \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__,        \
				__LINE__, #cond);                            \
			fprintf(stderr, __VA_ARGS__);                        \
			fprintf(stderr, "\n");                               \
		}                                                            \
	} while (0)

#define CHECK_DONE()                                                         \
	do {                                                                 \
		printf("%d checks, %d failed\n", check_count,                \
		       check_failures);                                      \
		return check_failures ? 1 : 0;                               \
	} while (0)

#endif
