/* Fuzz targets of the C core (targets.c); the driver is driver.c. */
#ifndef SFU_FUZZ_TARGETS_H
#define SFU_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;
    int (*fn)(const uint8_t *data, size_t size);
} sfu_fuzz_target_t;

extern const sfu_fuzz_target_t sfu_fuzz_targets[];
const sfu_fuzz_target_t *sfu_fuzz_find(const char *name);
/* Frees what targets keep across inputs (the engine), for leak checkers. */
void sfu_fuzz_cleanup(void);

int sfu_fuzz_rtp(const uint8_t *data, size_t size);
int sfu_fuzz_rtcp(const uint8_t *data, size_t size);
int sfu_fuzz_streams(const uint8_t *data, size_t size);
int sfu_fuzz_engine(const uint8_t *data, size_t size);
int sfu_fuzz_srtp(const uint8_t *data, size_t size);
int sfu_fuzz_rtcp_xr(const uint8_t *data, size_t size); /* target_rtcp_xr.c */
int sfu_fuzz_gcc(const uint8_t *data, size_t size);     /* target_gcc.c */
int sfu_fuzz_vp8(const uint8_t *data, size_t size);     /* target_vp8.c: VP8 and VP9 */

#endif
