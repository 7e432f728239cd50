/* A WebSocket echo server in C with Petrel.
 *   make install PREFIX=$HOME/.local
 *   cc -std=c11 echo.c $(pkg-config --cflags --libs petrel) -o echo && ./echo 9001 */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void on_message(void *userdata, petrel_server *s, uint64_t conn, void *conn_data, int32_t kind, const uint8_t *data,
                       size_t len) {
    (void)userdata, (void)conn_data;
    petrel_status status = petrel_conn_send(s, conn, kind, data, len); /* runs on a loop thread */
    if (status != PETREL_OK) fprintf(stderr, "send: %s\n", petrel_strerror(status));
}

int main(int argc, char **argv) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = (uint16_t)(argc > 1 ? atoi(argv[1]) : 9001);
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_message = on_message;

    /* Block SIGINT/SIGTERM before the loop threads start (they inherit the mask); wait for them below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    petrel_server *server = NULL;
    petrel_status status = petrel_server_create(&config, &callbacks, &server);
    if (status == PETREL_OK) status = petrel_server_start(server);
    if (status != PETREL_OK) {
        fprintf(stderr, "petrel: %s\n", petrel_strerror(status));
        petrel_server_destroy(server);
        return 1;
    }
    printf("echo server on ws://127.0.0.1:%u (Petrel %s)\n", config.port, petrel_version());
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    petrel_server_stop(server, 1000); /* close 1001 to every client, wait up to 1 s */
    petrel_server_destroy(server);
    return 0;
}
