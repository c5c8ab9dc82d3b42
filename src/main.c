/* main.c: `natwrp serve ...` | `natwrp agent ...`. Nothing else. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "nw.h"
#include "serve.h"
#include "version.h"

static void usage(FILE *f) {
    fprintf(f,
            "natwrp " NW_VERSION " - NAT-traversal web reverse proxy\n\n"
            "usage:\n"
            "  natwrp serve [--listen ADDR] ...   public side: HTTP in, agent tunnels in\n"
            "  natwrp agent [--env FILE] ...      NAT side: dials the server, serves LOCAL_URL\n\n"
            "Run 'natwrp serve --help' or 'natwrp agent --help' for their options.\n");
}

int main(int argc, char **argv) {
    /* Writes to a closed socket must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0)
        return nw_serve_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "agent") == 0)
        return nw_agent_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        nw_print_version();
        return 0;
    }
    fprintf(stderr, "natwrp: unknown command '%s' (use serve or agent)\n", argv[1]);
    return 2;
}
