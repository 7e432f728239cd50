#ifndef PETREL_CLINUX_SHIM_H
#define PETREL_CLINUX_SHIM_H
/* Linux APIs that Swift's Glibc module does not bring in. */
#include <sys/random.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#endif
