/* agent.h: the NAT side: tunnel dialer with backoff, stream -> local service. */
#ifndef NW_AGENT_H
#define NW_AGENT_H

int nw_agent_main(int argc, char **argv);

#endif
