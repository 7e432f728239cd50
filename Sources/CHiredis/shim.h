// hiredis (Debian's libhiredis-dev), for the Redis Streams engine. It is linked statically
// (Package.swift), so that libpetrel.so gains no runtime dependency and exports none of it.
#include <hiredis/hiredis.h>
