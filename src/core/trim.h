/* trim.h: heap trimmer (uv timer + malloc_trim). */
#ifndef NW_TRIM_H
#define NW_TRIM_H

#include <uv.h>

#include "nw.h"

/* Give freed heap back to the system after a burst. The owner reports its
 * load (open connections or requests) as it changes; a timer (h,
 * initialised by nw_trimmer_start) trims once the load has fallen below
 * half of the peak seen since the last trim. */
typedef struct {
    uv_timer_t timer;
    size_t peak, now;
} nw_trimmer_t;
void nw_trimmer_start(uv_loop_t *loop, nw_trimmer_t *tr);
static inline void nw_trimmer_load(nw_trimmer_t *tr, size_t load) {
    tr->now = load;
    if (load > tr->peak)
        tr->peak = load;
}

#endif
