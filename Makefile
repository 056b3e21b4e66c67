# basrec build. `make` builds the library and the command; `make test` runs
# the test suite; `make SAN=1 test` builds everything with AddressSanitizer
# and UBSan into build-san/ and runs the suite there.

CC      ?= cc
PREFIX  ?= /usr/local
# -O3 (with -fno-trapping-math, so branches in elementwise loops become
# blends) vectorises the kernels; AVX2/FMA where the CPU has them, not
# -march=native, whose AVX-512 code
# valgrind cannot run.
SIMD    := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo -mavx2 -mfma)
OPT     ?= -O3 -fno-trapping-math -fno-math-errno $(SIMD)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)

ifeq ($(SAN),1)
BUILD   ?= build-san
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT      = -O1 -g $(SIMD)
else
BUILD   ?= build
SANFLAGS =
endif

CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -fopenmp -g $(OPT) $(SANFLAGS) $(WERROR) -Iinclude -Isrc $(BLAS_CFLAGS)
LDLIBS  += $(BLAS_LIBS) -ljansson -lm
LDFLAGS += -fopenmp $(SANFLAGS)
# The HTTP service (basrec serve) only: the library does not need it.
MHD_CFLAGS := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS   := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)

LIB_SRC  := $(sort $(wildcard src/util/*.c src/data/*.c src/nn/*.c src/models/*.c \
                              src/train/*.c src/eval/*.c src/augment/*.c src/api/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
EXAMPLE_SRC := $(sort $(wildcard examples/*.c))
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
VERSION  := $(shell sed -n 's/^\#define BASREC_VERSION "\(.*\)"/\1/p' include/basrec.h)

all: $(BUILD)/basrec $(BUILD)/libbasrec.a

$(BUILD)/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libbasrec.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CLI_OBJ): CFLAGS += $(MHD_CFLAGS)

$(BUILD)/basrec: $(CLI_OBJ) $(BUILD)/libbasrec.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(MHD_LIBS)

# Examples see the public header only (no -Isrc): what an installed library offers.
$(BUILD)/examples/%: examples/%.c include/basrec.h $(BUILD)/libbasrec.a
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -g $(OPT) $(SANFLAGS) $(WERROR) -Iinclude -o $@ $< \
	    $(BUILD)/libbasrec.a $(LDFLAGS) $(LDLIBS)

examples: $(EXAMPLE_BIN)

$(BUILD)/tests/%: tests/%.c tests/testutil.h tests/fixture_util.h tests/loss_util.h $(BUILD)/libbasrec.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(BUILD)/libbasrec.a $(LDFLAGS) $(LDLIBS) -lcmocka

tests: $(TEST_BIN) $(BUILD)/basrec $(EXAMPLE_BIN)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libbasrec.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libbasrec.a $(LDFLAGS) $(LDLIBS)

# Benchmarks (not tests): prints figures and appends them to bench/RESULTS.md.
bench: $(BENCH_BIN)
	@BUILD=$(BUILD) sh bench/run.sh

# Runs every test binary and the CLI tests; prints "N passed, N failed".
test: tests
	@BUILD=$(BUILD) sh tests/run.sh $(TEST_BIN)

clean:
	rm -rf build build-san

# make install PREFIX=/opt/basrec [DESTDIR=...]; make uninstall with the same
# PREFIX. basrec.pc lists the static library's dependencies in Libs, since
# every program linking libbasrec.a needs them.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(BUILD)/basrec $(DESTDIR)$(PREFIX)/bin/basrec
	install -m 644 $(BUILD)/libbasrec.a $(DESTDIR)$(PREFIX)/lib/libbasrec.a
	install -m 644 include/basrec.h $(DESTDIR)$(PREFIX)/include/basrec.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@BLAS_LIBS@|$(BLAS_LIBS)|' \
	    basrec.pc.in >$(DESTDIR)$(PREFIX)/lib/pkgconfig/basrec.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/basrec $(DESTDIR)$(PREFIX)/lib/libbasrec.a \
	      $(DESTDIR)$(PREFIX)/include/basrec.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/basrec.pc

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

.PHONY: all tests test bench clean examples install uninstall
