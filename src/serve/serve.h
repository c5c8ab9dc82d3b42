/* serve.h: the public side: HTTP listener, agent registry, request -> stream. */
#ifndef NW_SERVE_H
#define NW_SERVE_H

int nw_serve_main(int argc, char **argv);

#endif
