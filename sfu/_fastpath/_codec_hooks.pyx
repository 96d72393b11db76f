# cython: language_level=3
"""Test hooks of the VP8 and VP9 payload descriptor units (src/vp8.c,
src/vp9.c): sfu._fastpath._codec_hooks, for tests only (the engine does not
import it)."""

from libc.stdint cimport uint8_t, uint16_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy


cdef extern from "src/vp8.h" nogil:
    int SFU_VP8_ETRUNCATED
    int SFU_VP8_EINVALID
    int SFU_VP8_FWD_HISTORY
    ctypedef struct sfu_vp8_desc_t:
        int extended
        int non_reference
        int start_of_partition
        int partition_id
        int has_picture_id
        int picture_id_bits
        uint16_t picture_id
        size_t picture_id_offset
        int has_tl0picidx
        uint8_t tl0picidx
        size_t tl0picidx_offset
        int has_tid
        uint8_t tid
        int layer_sync
        int has_keyidx
        uint8_t keyidx
        int keyframe
        size_t descriptor_len
    ctypedef struct sfu_vp8_fwd_t:
        int tid
    int sfu_vp8_parse(const uint8_t *payload, size_t len, sfu_vp8_desc_t *d)
    void sfu_vp8_fwd_init(sfu_vp8_fwd_t *f)
    int sfu_vp8_fwd_packet(sfu_vp8_fwd_t *f, const sfu_vp8_desc_t *d, int stream_switched, int target_tid,
                           uint8_t *out_payload, size_t out_len)


cdef extern from "src/vp9.h" nogil:
    int SFU_VP9_ETRUNCATED
    int SFU_VP9_EINVALID
    ctypedef struct sfu_vp9_desc_t:
        int has_picture_id
        int inter_picture_predicted
        int has_layer_indices
        int flexible
        int begin_of_frame
        int end_of_frame
        int has_ss
        int not_reference
        int picture_id_bits
        uint16_t picture_id
        size_t picture_id_offset
        uint8_t tid
        int switching_up_point
        uint8_t sid
        int inter_layer_dependency
        int has_tl0picidx
        uint8_t tl0picidx
        size_t tl0picidx_offset
        int num_ref
        uint8_t p_diff[3]
        int ss_spatial_layers
        int ss_has_resolutions
        uint16_t ss_width[8]
        uint16_t ss_height[8]
        int ss_has_group
        int ss_group_size
        int keyframe
        size_t descriptor_len
    ctypedef struct sfu_vp9_fwd_t:
        int started
        int sid
        int tid
        int spatial_layers
    int sfu_vp9_parse(const uint8_t *payload, size_t len, sfu_vp9_desc_t *d)
    void sfu_vp9_fwd_init(sfu_vp9_fwd_t *f)
    int sfu_vp9_fwd_packet(sfu_vp9_fwd_t *f, const sfu_vp9_desc_t *d, int target_sid, int target_tid, int ksvc,
                           int *set_marker)


VP8_ETRUNCATED = SFU_VP8_ETRUNCATED
VP8_EINVALID = SFU_VP8_EINVALID
VP8_FWD_HISTORY = SFU_VP8_FWD_HISTORY
VP9_ETRUNCATED = SFU_VP9_ETRUNCATED
VP9_EINVALID = SFU_VP9_EINVALID


class CodecError(ValueError):
    """A negative SFU_VP8_E* / SFU_VP9_E* code."""

    def __init__(self, code):
        super().__init__(f"descriptor error {code}")
        self.code = code


cdef int _vp8(const uint8_t[:] payload, sfu_vp8_desc_t *d):
    cdef const uint8_t *p = NULL
    if payload.shape[0] > 0:
        p = &payload[0]
    return sfu_vp8_parse(p, payload.shape[0], d)


cdef dict _vp8_dict(sfu_vp8_desc_t *d):
    return dict(
        extended=d.extended, non_reference=d.non_reference, start_of_partition=d.start_of_partition,
        partition_id=d.partition_id,
        picture_id=d.picture_id if d.has_picture_id else None, picture_id_bits=d.picture_id_bits,
        picture_id_offset=d.picture_id_offset if d.has_picture_id else None,
        tl0picidx=d.tl0picidx if d.has_tl0picidx else None,
        tl0picidx_offset=d.tl0picidx_offset if d.has_tl0picidx else None,
        tid=d.tid if d.has_tid else None, layer_sync=d.layer_sync,
        keyidx=d.keyidx if d.has_keyidx else None,
        keyframe=d.keyframe, descriptor_len=d.descriptor_len,
    )


def vp8_parse(const uint8_t[:] payload):
    """The descriptor as a dict (absent fields None) or raises CodecError."""
    cdef sfu_vp8_desc_t d
    cdef int rc = _vp8(payload, &d)
    if rc < 0:
        raise CodecError(rc)
    return _vp8_dict(&d)


cdef class Vp8Forwarder:
    """sfu_vp8_fwd_t: packet() returns (decision, payload as sent): the
    decision is 1/0 (or a negative code), the payload is the rewritten copy
    (None when dropped)."""
    cdef sfu_vp8_fwd_t f

    def __cinit__(self):
        sfu_vp8_fwd_init(&self.f)

    def packet(self, const uint8_t[:] payload, int target_tid, bint stream_switched=False, out_len=None):
        cdef sfu_vp8_desc_t d
        cdef int rc = _vp8(payload, &d)
        if rc < 0:
            raise CodecError(rc)
        cdef size_t n = payload.shape[0]
        cdef size_t olen = n if out_len is None else out_len
        cdef uint8_t *out = <uint8_t *>malloc(n)
        if out == NULL:
            raise MemoryError()
        try:
            memcpy(out, &payload[0], n)
            rc = sfu_vp8_fwd_packet(&self.f, &d, stream_switched, target_tid, out, olen)
            return rc, (bytes(out[:n]) if rc == 1 else None)
        finally:
            free(out)

    @property
    def tid(self):
        return self.f.tid


cdef int _vp9(const uint8_t[:] payload, sfu_vp9_desc_t *d):
    cdef const uint8_t *p = NULL
    if payload.shape[0] > 0:
        p = &payload[0]
    return sfu_vp9_parse(p, payload.shape[0], d)


def vp9_parse(const uint8_t[:] payload):
    """The descriptor as a dict (absent fields None) or raises CodecError."""
    cdef sfu_vp9_desc_t d
    cdef int rc = _vp9(payload, &d)
    cdef int s
    if rc < 0:
        raise CodecError(rc)
    return dict(
        inter_picture_predicted=d.inter_picture_predicted, flexible=d.flexible,
        begin_of_frame=d.begin_of_frame, end_of_frame=d.end_of_frame, not_reference=d.not_reference,
        picture_id=d.picture_id if d.has_picture_id else None, picture_id_bits=d.picture_id_bits,
        has_layer_indices=d.has_layer_indices, tid=d.tid, switching_up_point=d.switching_up_point, sid=d.sid,
        inter_layer_dependency=d.inter_layer_dependency,
        tl0picidx=d.tl0picidx if d.has_tl0picidx else None,
        p_diff=[d.p_diff[s] for s in range(d.num_ref)],
        ss=(dict(spatial_layers=d.ss_spatial_layers,
                 resolutions=[(d.ss_width[s], d.ss_height[s]) for s in range(d.ss_spatial_layers)]
                 if d.ss_has_resolutions else None,
                 group_size=d.ss_group_size if d.ss_has_group else None) if d.has_ss else None),
        keyframe=d.keyframe, descriptor_len=d.descriptor_len,
    )


cdef class Vp9Filter:
    """sfu_vp9_fwd_t: packet() returns (decision, set_marker)."""
    cdef sfu_vp9_fwd_t f

    def __cinit__(self):
        sfu_vp9_fwd_init(&self.f)

    def packet(self, const uint8_t[:] payload, int target_sid, int target_tid, bint ksvc=False):
        cdef sfu_vp9_desc_t d
        cdef int marker = 0
        cdef int rc = _vp9(payload, &d)
        if rc < 0:
            raise CodecError(rc)
        rc = sfu_vp9_fwd_packet(&self.f, &d, target_sid, target_tid, ksvc, &marker)
        return rc, marker

    @property
    def sid(self):
        return self.f.sid

    @property
    def tid(self):
        return self.f.tid

    @property
    def started(self):
        return self.f.started


cdef extern from "src/seqmgr.h" nogil:
    ctypedef struct sfu_seqmgr_t:
        pass
    void sfu_seqmgr_init(sfu_seqmgr_t *m, uint16_t initial_output)
    void sfu_seqmgr_sync(sfu_seqmgr_t *m, uint16_t input)
    void sfu_seqmgr_drop(sfu_seqmgr_t *m, uint16_t input)
    int sfu_seqmgr_input(sfu_seqmgr_t *m, uint16_t input, uint16_t *output)


cdef class SeqManager:
    """sfu_seqmgr_t (src/seqmgr.h), to check the pairing vp8.h documents:
    input() returns the output sequence number or None."""
    cdef sfu_seqmgr_t m

    def __cinit__(self, uint16_t initial_output=0):
        sfu_seqmgr_init(&self.m, initial_output)

    def sync(self, uint16_t seq):
        sfu_seqmgr_sync(&self.m, seq)

    def drop(self, uint16_t seq):
        sfu_seqmgr_drop(&self.m, seq)

    def input(self, uint16_t seq):
        cdef uint16_t out = 0
        if sfu_seqmgr_input(&self.m, seq, &out):
            return out
        return None
