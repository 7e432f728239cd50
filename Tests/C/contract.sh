#!/usr/bin/env bash
# The C header is the contract: checks that the library exports exactly the petrel_ functions
# the header declares, that the header compiles on its own as C11 (-pedantic) and as C++17, and
# that the version macros match petrel_version().
# Usage: contract.sh PREFIX   (where `make install` put include/, lib/ and lib/pkgconfig/)
set -euo pipefail
prefix=$1
header=$prefix/include/petrel.h
lib=$prefix/lib/libpetrel.so
fail=0

exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | grep '^petrel_' | sort -u)
declared=$(grep -oE '\bpetrel_[a-z0-9_]+\s*\(' "$header" | sed 's/\s*($//' | sort -u)
if [ "$exported" != "$declared" ]; then
    echo "contract: exports and declarations differ:"
    diff <(echo "$declared") <(echo "$exported") | sed 's/^</  declared only:/; s/^>/  exported only:/' | grep only || true
    fail=1
fi
others=$(nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | grep -v '^petrel_' || true)
if [ -n "$others" ]; then
    echo "contract: the library exports functions outside the petrel_ namespace:"
    echo "$others" | head -20 | sed 's/^/  /'
    fail=1
fi
if ldd "$lib" | grep -q 'libswift'; then
    echo "contract: libpetrel.so depends on a Swift runtime library:"
    ldd "$lib" | grep libswift
    fail=1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#include <petrel.h>\nint main(void) { return PETREL_VERSION_NUMBER > 0 ? 0 : 1; }\n' > "$tmp/alone.c"
cc -std=c11 -Wall -Wextra -Werror -pedantic -I"$prefix/include" -c "$tmp/alone.c" -o "$tmp/alone.o" || fail=1
cp "$tmp/alone.c" "$tmp/alone.cpp"
c++ -std=c++17 -Wall -Wextra -Werror -I"$prefix/include" -c "$tmp/alone.cpp" -o "$tmp/alone_cpp.o" || fail=1

cat > "$tmp/version.c" <<'C'
#include <petrel.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", PETREL_VERSION_MAJOR, PETREL_VERSION_MINOR, PETREL_VERSION_PATCH);
    if (strcmp(expected, petrel_version()) != 0 || petrel_version_number() != PETREL_VERSION_NUMBER) {
        printf("version mismatch: header %s, library %s\n", expected, petrel_version());
        return 1;
    }
    return 0;
}
C
cc -std=c11 -Wall -Wextra -Werror $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags petrel) "$tmp/version.c" \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --libs petrel) -Wl,-rpath,"$prefix/lib" -o "$tmp/version"
"$tmp/version" || fail=1

# A process without a Swift toolchain in its environment can load the library.
env -i /usr/bin/python3 -c "import ctypes; ctypes.CDLL('$lib')" || fail=1

if [ $fail -eq 0 ]; then
    echo "contract: $(echo "$declared" | wc -l) functions declared and exported; header compiles as C11 and C++17; version matches"
    echo "contract: 1 passed, 0 failed"
else
    echo "contract: 0 passed, 1 failed"
fi
exit $fail
