#ifndef PETREL_CISAL_SHIM_H
#define PETREL_CISAL_SHIM_H
/* ISA-L's igzip (libisal-dev): the types only. Package.swift adds this module when the header is
 * there; the functions are looked up at run time in libisal.so.2 (dlopen), so neither libpetrel.so
 * nor a program built with ISA-L needs the library to start: without it, zlib compresses. */
#include <isa-l/igzip_lib.h>
#endif
