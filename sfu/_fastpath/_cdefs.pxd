# C declarations of the engine (src/*.h) for Cython.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct sockaddr_storage:
        unsigned short ss_family

cdef extern from "src/sockaddr.h" nogil:
    int sfu_sockaddr_from_ip(const char *ip, int port, sockaddr_storage *ss, socklen_t *len)
    int sfu_sockaddr_to_ip(const sockaddr_storage *ss, char *ip)

cdef extern from "src/rtp.h" nogil:
    ctypedef struct sfu_rtp_t:
        uint8_t version
        uint8_t padding
        uint8_t extension
        uint8_t csrc_count
        uint8_t marker
        uint8_t payload_type
        uint16_t seq
        uint32_t timestamp
        uint32_t ssrc
        uint16_t ext_profile
        uint32_t ext_offset
        uint32_t ext_length
        uint32_t header_length
        uint32_t payload_length
        uint32_t padding_length
    ctypedef struct sfu_rtp_ext_elem_t:
        uint8_t id
        uint8_t length
        uint16_t offset
    int SFU_RTP_MAX_EXTENSIONS
    int sfu_rtp_parse(const uint8_t *buf, size_t len, sfu_rtp_t *out)
    int sfu_rtp_ext_elements(const uint8_t *buf, const sfu_rtp_t *p, sfu_rtp_ext_elem_t *elems, int max)
    int sfu_rtp_map_extensions(uint8_t *buf, size_t *len, size_t cap, sfu_rtp_t *p, const uint8_t *map)
    long sfu_rtp_copy_rewrite_extensions(uint8_t *dst, size_t cap, const uint8_t *src, size_t len, const sfu_rtp_t *p,
                                         const uint8_t *map, uint8_t add_id, const uint8_t *add, uint8_t add_len)
    int sfu_classify(const uint8_t *buf, size_t len)

cdef extern from "src/rtcp.h" nogil:
    ctypedef struct sfu_rtcp_item_t:
        uint8_t packet_type
        uint8_t count
        uint8_t padding
        uint32_t offset
        uint32_t length
    int SFU_RTCP_MAX_ITEMS
    int sfu_rtcp_parse_compound(const uint8_t *buf, size_t len, sfu_rtcp_item_t *items, int max)

cdef extern from "src/seqmgr.h" nogil:
    ctypedef struct sfu_seqmgr_t:
        int started
        uint16_t base
        uint16_t max_input
        uint16_t max_output
        int ndropped
    void sfu_seqmgr_init(sfu_seqmgr_t *m, uint16_t initial_output)
    void sfu_seqmgr_sync(sfu_seqmgr_t *m, uint16_t input)
    void sfu_seqmgr_drop(sfu_seqmgr_t *m, uint16_t input)
    int sfu_seqmgr_input(sfu_seqmgr_t *m, uint16_t input, uint16_t *output)

cdef extern from "src/rtt.h" nogil:
    ctypedef struct sfu_rtt_t:
        uint32_t rtt_ms
        uint64_t samples
        uint64_t rejected

cdef extern from "src/engine.h" nogil:
    int SFU_SLOT_SIZE
    int SFU_C_COUNT
    int SFU_UP_PACKET
    int SFU_UP_TUPLE
    int SFU_UP_LAYERS

    ctypedef struct sfu_count_t:
        uint64_t packets
        uint64_t bytes
    ctypedef struct sfu_addr_t:
        sockaddr_storage addr
        socklen_t len
        int set
    ctypedef struct sfu_slot_t:
        uint32_t socket
        uint32_t len
        socklen_t dest_len
        sockaddr_storage dest  # declared as sockaddr_in6 in C; read via cast
        uint8_t data[1]
    ctypedef struct sfu_direct_queue_t:
        uint8_t *buf
        uint32_t used, cap
        uint64_t packets, bytes, drops
    ctypedef struct sfu_socket_t:
        uint32_t handle
        int fd
        sfu_direct_queue_t *direct
        uint32_t transport
        int is_rtcp
    ctypedef struct sfu_transport_t:
        uint32_t handle
        uint32_t rtp_socket
        uint32_t rtcp_socket
        int comedia
        int ice
        int require_srtp
        sfu_addr_t remote
        sfu_addr_t remote_rtcp
        sfu_count_t rtp_in, rtp_out, rtcp_in, rtcp_out
        uint64_t drops
        uint32_t nconsumers
        sfu_rtt_t rtt
    # the NACK generator's counters (its full declaration is in nack.pxi,
    # under its own name: the test hooks include both)
    ctypedef struct sfu_nack_counts_t "sfu_nack_gen_t":
        uint64_t nacked
        uint64_t recovered
        uint64_t late
        uint64_t gave_up
    ctypedef struct sfu_producer_stream_t:
        uint32_t ssrc
        uint32_t rtx_ssrc
        sfu_count_t received
        sfu_nack_counts_t nack
        uint16_t max_seq
        uint64_t last_packet_ms
        uint64_t keyframe_requests
        uint64_t keyframes
        char stats  # sfu_rtp_stats_t, used by address only
        uint64_t rtx_received
        uint64_t nack_packets_sent
        uint64_t rate_bps
        uint8_t svc_layers
        uint64_t svc_rate_bps[4]
        uint8_t last_fraction_lost
        int score
    ctypedef struct sfu_producer_t:
        uint32_t handle
        sfu_transport_t *transport
        int paused
        int nstreams
        sfu_producer_stream_t streams[4]
        uint32_t nconsumers
    ctypedef struct sfu_consumer_t:
        uint32_t handle
        void *producer
        int stream
        int target_stream
        int preferred_stream
        int preferred_temporal
        uint8_t svc
        int svc_sid
        uint8_t priority
        uint64_t layer_changes
        uint8_t paused
        uint8_t producer_paused
        uint8_t sync_required
        uint8_t svc_key_wanted
        uint32_t ssrc
        sfu_seqmgr_t seq
        sfu_count_t sent
        uint64_t dropped
        int nack_enabled
        uint64_t nack_packets_received, nacked_seqs, retransmitted, pli_received, fir_received
        uint32_t rtt_ms
        uint8_t fraction_lost
        int32_t packets_lost
        uint32_t jitter
        uint64_t rate_bps
        int score
    ctypedef struct sfu_upcall_t:
        int type
        uint32_t socket
        uint32_t transport
        int is_rtcp
        int kind
        sockaddr_storage addr
        socklen_t addr_len
        uint32_t len
        uint8_t *data
    ctypedef struct sfu_engine_t:
        sfu_slot_t *outbox
        uint32_t outbox_used
        uint64_t counters[32]
        void (*flush)(sfu_engine_t *e)
        int notify_fd
        uint64_t loop_busy_ns
        uint32_t keyframe_request_interval_ms

    sfu_engine_t *sfu_engine_new()
    void sfu_engine_free(sfu_engine_t *e)
    void sfu_engine_lock(sfu_engine_t *e)
    void sfu_engine_unlock(sfu_engine_t *e)

    uint32_t sfu_socket_add_locked(sfu_engine_t *e, int fd)
    uint32_t sfu_direct_socket_add_locked(sfu_engine_t *e, uint32_t cap)
    int sfu_socket_remove_locked(sfu_engine_t *e, uint32_t s)
    uint32_t sfu_transport_add_locked(sfu_engine_t *e, uint32_t rtp_socket, uint32_t rtcp_socket, int flags)
    int SFU_TRANSPORT_COMEDIA
    int SFU_TRANSPORT_ICE
    int SFU_TRANSPORT_REQUIRE_SRTP
    int sfu_tuple_bind_locked(sfu_engine_t *e, uint32_t socket, const sockaddr *addr, socklen_t len, uint32_t transport)
    int sfu_tuple_unbind_locked(sfu_engine_t *e, uint32_t socket, const sockaddr *addr, socklen_t len)
    int sfu_send_raw_locked(sfu_engine_t *e, uint32_t socket, const sockaddr *addr, socklen_t len,
                            const uint8_t *data, size_t n)
    int sfu_transport_connect_locked(sfu_engine_t *e, uint32_t t, const sockaddr *rtp, socklen_t rtp_len,
                                     const sockaddr *rtcp, socklen_t rtcp_len)
    int sfu_transport_set_srtp_locked(sfu_engine_t *e, uint32_t t, int profile, const uint8_t *in_key, size_t in_len,
                                      const uint8_t *out_key, size_t out_len)
    int sfu_transport_remove_locked(sfu_engine_t *e, uint32_t t)
    uint32_t sfu_producer_add_locked(sfu_engine_t *e, uint32_t t, int kind_video, int nstreams,
                                     const uint32_t *ssrcs, const uint32_t *rtx_ssrcs,
                                     const uint8_t *pt_map, const uint8_t *ext_map, int paused)
    int sfu_producer_set_rtp_ids_locked(sfu_engine_t *e, uint32_t p, const char *mid, const char *const *rids,
                                        uint8_t mid_ext_in, uint8_t rid_ext_in, uint8_t rrid_ext_in)
    int sfu_producer_set_paused_locked(sfu_engine_t *e, uint32_t p, int paused)
    int sfu_producer_set_codecs_locked(sfu_engine_t *e, uint32_t p, const uint8_t *codec_of_pt)
    int sfu_producer_set_feedback_locked(sfu_engine_t *e, uint32_t p, int nack, const uint8_t *rtx_apt,
                                         uint8_t twcc_ext_id, uint64_t remb_floor_bps, uint32_t clock_rate)
    int sfu_consumer_set_feedback_locked(sfu_engine_t *e, uint32_t c, int nack, uint8_t rtx_pt)
    int64_t sfu_producer_stream_packets_lost "sfu_rtp_stats_packets_lost"(const void *stats)
    uint32_t sfu_producer_stream_jitter "sfu_rtp_stats_jitter"(const void *stats)
    int sfu_producer_remove_locked(sfu_engine_t *e, uint32_t p)
    uint32_t sfu_consumer_add_locked(sfu_engine_t *e, uint32_t t, uint32_t p, uint32_t ssrc, uint32_t rtx_ssrc,
                                     uint32_t clock_rate, const uint8_t *pt_map, const uint8_t *ext_map,
                                     int paused, uint16_t initial_seq)
    int sfu_consumer_set_mid_locked(sfu_engine_t *e, uint32_t c, uint8_t ext_id, const char *mid)
    int sfu_consumer_set_paused_locked(sfu_engine_t *e, uint32_t c, int paused)
    int sfu_consumer_set_target_stream_locked(sfu_engine_t *e, uint32_t c, int stream)
    int sfu_consumer_set_priority_locked(sfu_engine_t *e, uint32_t c, int priority)
    int sfu_consumer_set_fixed_stream_locked(sfu_engine_t *e, uint32_t c, int stream)
    int sfu_consumer_set_temporal_locked(sfu_engine_t *e, uint32_t c, int temporal)
    int sfu_consumer_set_twcc_locked(sfu_engine_t *e, uint32_t c, uint8_t ext_id, int remb)
    int sfu_consumer_request_keyframe_locked(sfu_engine_t *e, uint32_t c, uint64_t now_ms)
    int sfu_producer_request_keyframe_locked(sfu_engine_t *e, uint32_t p, uint64_t now_ms)
    int sfu_engine_tick(sfu_engine_t *e, uint64_t now_ms)
    int sfu_consumer_remove_locked(sfu_engine_t *e, uint32_t c)

    sfu_socket_t *sfu_socket_get(sfu_engine_t *e, uint32_t h)
    sfu_transport_t *sfu_transport_get(sfu_engine_t *e, uint32_t h)
    sfu_producer_t *sfu_producer_get(sfu_engine_t *e, uint32_t h)
    sfu_consumer_t *sfu_consumer_get(sfu_engine_t *e, uint32_t h)

    void sfu_engine_receive(sfu_engine_t *e, uint32_t socket, const sockaddr *src, socklen_t src_len,
                            uint8_t *buf, size_t len, size_t cap, uint64_t now_ms)
    void sfu_outbox_clear(sfu_engine_t *e)
    int sfu_upcall_pop_locked(sfu_engine_t *e, sfu_upcall_t *up)
    int sfu_io_start(sfu_engine_t *e)
    void sfu_io_stop(sfu_engine_t *e)
    void sfu_io_flush_locked(sfu_engine_t *e)
    uint64_t sfu_now_ms()

cdef extern from "src/bwe.h" nogil:
    ctypedef struct sfu_bwe_stats_t:
        uint32_t estimate_bps, allocated_bps, acked_bps, next_step_bps
        int usage
        uint64_t feedbacks, rembs, probes, probes_failed, padding_packets, padding_bytes
    int sfu_bwe_stats(const sfu_transport_t *t, sfu_bwe_stats_t *out)

cdef extern from "src/keyframe.h" nogil:
    int sfu_is_keyframe(int codec, const uint8_t *p, size_t n)
