#!/usr/bin/env bash
# The C header is the contract: checks that the library exports exactly the petrel_ functions
# the header declares, each at symbol version PETREL_0 (or a later PETREL_0.N node), none
# unversioned; that it is installed as libpetrel.so.MAJOR.MINOR.PATCH (the header's version)
# with soname libpetrel.so.0 and the links libpetrel.so -> libpetrel.so.0 -> that file; that the
# header compiles on its own as C11 (-pedantic) and as C++17; and that the version macros match
# petrel_version().
# Usage: contract.sh PREFIX   (where `make install` put include/, lib/ and lib/pkgconfig/)
set -euo pipefail
prefix=$1
header=$prefix/include/petrel.h
libdir=$prefix/lib
# The ABI: soname libpetrel.so.$abi (ABI_MAJOR in the Makefile), symbol versions PETREL_$abi.
abi=0
soname=libpetrel.so.$abi
version=$(sed -n 's/^#define PETREL_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' "$header" | paste -sd.)
# Every look into the binary (nm, objdump, ldd) reads the real file; readelf reads it through the
# soname link, and the process with an empty environment loads it through libpetrel.so.
lib=$libdir/libpetrel.so.$version
fail=0

if [ ! -f "$lib" ] || [ -L "$lib" ]; then
    echo "contract: $lib is missing or not a regular file (the header says version $version)"
    ls -l "$libdir" | grep libpetrel | sed 's/^/  /' || true
    echo "contract: 0 passed, 1 failed"
    exit 1
fi
for link in libpetrel.so "$soname"; do
    target=$(readlink "$libdir/$link" || true)
    if [ ! -L "$libdir/$link" ]; then
        echo "contract: $libdir/$link is not a symbolic link"
        fail=1
    elif [ "${target#/}" != "$target" ]; then
        echo "contract: $libdir/$link -> $target is not a relative link"
        fail=1
    elif [ "$(readlink -f "$libdir/$link")" != "$(readlink -f "$lib")" ]; then
        echo "contract: $libdir/$link resolves to $(readlink -f "$libdir/$link"), not $lib"
        fail=1
    fi
done
if [ "$(readlink "$libdir/libpetrel.so" || true)" != "$soname" ]; then
    echo "contract: libpetrel.so should point at $soname, not at $(readlink "$libdir/libpetrel.so" || true)"
    fail=1
fi
actual_soname=$(readelf -d "$libdir/$soname" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p' || true)
if [ "$actual_soname" != "$soname" ]; then
    echo "contract: the library's SONAME is '${actual_soname}', not $soname"
    fail=1
fi

# objdump -T: address, flags, section, then after a tab the size, the version and the name (no
# version column at all in a library without versions; "Base" for a symbol in no node). Local
# entries (flag "l": Swift type metadata the linker keeps in .dynsym for relocations, not
# exported) are skipped.
unversioned=$(objdump -T "$lib" | awk -F'\t' -v abi="$abi" '
    NF == 2 && $1 !~ /\*UND\*/ && $1 !~ /\*ABS\*/ && $1 !~ /^[0-9a-f]+ l/ {
        n = split($2, f, " ")
        name = f[n]; ver = (n >= 3 ? f[2] : "none")
        if (ver !~ ("^PETREL_" abi "(\\.[0-9]+)*$")) print name " (version: " ver ")"
    }')
if [ -n "$unversioned" ]; then
    echo "contract: exported symbols without the version PETREL_$abi:"
    echo "$unversioned" | sort | head -20 | sed 's/^/  /'
    fail=1
fi
versions=$(objdump -T "$lib" | awk -F'\t' 'NF == 2 && $1 !~ /\*UND\*/ && $1 !~ /\*ABS\*/ {
        n = split($2, f, " "); if (n >= 3 && f[n] ~ /^petrel_/) print f[2] }' | sort | uniq -c | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')

exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | grep '^petrel_' | sort -u)
declared=$(grep -oE '\bpetrel_[a-z0-9_]+\s*\(' "$header" | sed 's/\s*($//' | sort -u)
if [ "$exported" != "$declared" ]; then
    echo "contract: exports and declarations differ:"
    diff <(echo "$declared") <(echo "$exported") | sed 's/^</  declared only:/; s/^>/  exported only:/' | grep only || true
    fail=1
fi
others=$(nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | grep -v '^petrel_' || true)
if [ -n "$others" ]; then
    echo "contract: the library exports functions outside the petrel_ namespace:"
    echo "$others" | head -20 | sed 's/^/  /'
    fail=1
fi
if ldd "$lib" | grep -q 'libswift'; then
    echo "contract: $(basename "$lib") depends on a Swift runtime library:"
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
# A program linked with -lpetrel (through the libpetrel.so link) records the soname, not the file.
needed=$(readelf -d "$tmp/version" | sed -n 's/.*(NEEDED).*\[\(libpetrel[^]]*\)\].*/\1/p')
if [ "$needed" != "$soname" ]; then
    echo "contract: a program linked with -lpetrel needs '${needed}', not $soname"
    fail=1
fi

# A process without a Swift toolchain in its environment can load the library.
env -i /usr/bin/python3 -c "import ctypes; ctypes.CDLL('$libdir/libpetrel.so')" || fail=1

if [ $fail -eq 0 ]; then
    echo "contract: $(echo "$declared" | wc -l) functions declared and exported, at symbol versions: $versions;" \
        "soname $soname, libpetrel.so -> $soname -> libpetrel.so.$version; header compiles as C11 and C++17; version matches"
    echo "contract: 1 passed, 0 failed"
else
    echo "contract: 0 passed, 1 failed"
fi
exit $fail
