/* The compiled decoder: OTLP Export{Logs,Trace,Metrics}ServiceRequest protobuf bytes → Arrow
 * arrays of the v1 logs, spans and metrics tables (handed over by the Arrow C data interface,
 * no copy), with the GIL released while it works (docs/decoder.md).
 *
 * It reproduces otel_ingest/flatten (the reference) exactly for every request it accepts;
 * tests/test_decoder.py compares the two on captures, generated messages and mutated bodies.
 * Whatever it is not sure to reproduce it refuses to decide: decode_logs() (and the others) returns None and the
 * caller runs the Python path, which answers it (a 400 for an invalid body, a 413/503 for a
 * body whose rows would be too large). The request is first checked whole against the message
 * shapes below (wire types, lengths, UTF-8, nesting); rows are extracted only from a body that
 * passed, so the extraction code needs no error handling beyond the record-rejection rules.
 *
 * Fields the protos define but this decoder does not read (Resource.entity_refs, the *_strindex
 * fields of profiles) are declined too: a body that uses them takes the Python path.
 *
 * None means: not valid protobuf, a group or a wire type protobuf would treat differently, a
 * singular message field sent twice (protobuf merges them), a varint that does not fit its
 * field, nesting deeper than CHECK_DEPTH, a string column past 2 GiB, or output past the
 * caller's byte limit.
 */
#ifndef OTEL_NATIVE_FUZZ /* fuzz/: the same code without Python, driven by libFuzzer */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ANY_VALUE_DEPTH 32 /* otel_ingest.flatten.common.MAX_ANY_VALUE_DEPTH */
#define CHECK_DEPTH 90         /* protobuf's own limit is 100; deeper bodies go to Python */
#define INT32_LIMIT 0x7fffffffLL
/* The small readers and builders every byte goes through: inlined, whatever the compiler's
 * heuristics say (measured: they were left as calls after unrelated changes). */
#define HOT static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------------ */
/* Growable byte buffers (malloc: they are filled without the GIL).                       */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

HOT int buf_reserve(Buf *b, size_t extra) {
    if (b->p && b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

HOT int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int buf_str(Buf *b, const char *s) { return buf_put(b, s, strlen(s)); }

static void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------------------------------ */
/* Status codes.                                                                          */

enum { OK = 0, UNDECIDED = 1, NOMEM = 2, REJECT = 3 };

/* ------------------------------------------------------------------------------------ */
/* Protobuf wire reading.                                                                 */

typedef struct {
    const uint8_t *p, *end;
} Rd;

static const uint8_t NOTHING[1] = {0}; /* stands for an absent message: no arithmetic on NULL */

HOT int rd_varint(Rd *r, uint64_t *out) {
    if (r->p < r->end && *r->p < 0x80) { /* most varints (tags, lengths, small numbers) */
        *out = *r->p++;
        return 0;
    }
    uint64_t v = 0;
    *out = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return -1;
        uint8_t byte = *r->p++;
        if (i == 9 && byte > 1) {
            r->p = r->end;
            return -1;
        }
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Readers that fail move to the end, so that no loop over a message can stall. */
HOT int rd_tag(Rd *r, uint32_t *field, int *wt) {
    uint64_t tag;
    const uint8_t *start = r->p;
    *field = 0;
    *wt = 0;
    if (rd_varint(r, &tag) || r->p - start > 5 || tag > 0xffffffffULL) {
        r->p = r->end;
        return -1;
    }
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    return *field == 0 ? -1 : 0;
}

HOT int rd_bytes(Rd *r, const uint8_t **p, size_t *n) {
    uint64_t len;
    *p = NULL;
    *n = 0;
    if (rd_varint(r, &len) || len > (uint64_t)(r->end - r->p)) {
        r->p = r->end;
        return -1;
    }
    *p = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int rd_fixed64(Rd *r, uint64_t *v) {
    *v = 0;
    if (r->end - r->p < 8) {
        r->p = r->end;
        return -1;
    }
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = (x << 8) | r->p[i];
    *v = x;
    r->p += 8;
    return 0;
}

static int rd_fixed32(Rd *r, uint32_t *v) {
    *v = 0;
    if (r->end - r->p < 4) {
        r->p = r->end;
        return -1;
    }
    *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return 0;
}

/* Skip an unknown field; groups (3, 4) and wire types 6, 7 are left to protobuf. */
static int rd_skip(Rd *r, int wt) {
    uint64_t v;
    const uint8_t *p;
    size_t n;
    uint32_t f32;
    switch (wt) {
        case 0: return rd_varint(r, &v);
        case 1: return rd_fixed64(r, &v);
        case 2: return rd_bytes(r, &p, &n);
        case 5: return rd_fixed32(r, &f32);
        default: r->p = r->end; return -1;
    }
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) { /* ASCII eight bytes at a time: most text is */
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (!(word & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= need) return 0;
        for (size_t k = 1; k <= need; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Message shapes, for the check of the whole body.                                      */

enum {
    K_VARINT, K_INT32, K_UINT32, K_SINT32, K_FIXED64, K_FIXED32, K_STRING, K_BYTES, K_MSG, K_MSG1,
    K_REP_FIXED64, /* repeated fixed64/double: one per field (wire type 1) or packed (2) */
    K_REP_VARINT,  /* repeated uint64: one per field (wire type 0) or packed (2) */
    K_UNSUPPORTED
};

typedef struct MsgSpec MsgSpec;
typedef struct {
    uint32_t num;
    int kind;
    const MsgSpec *sub;
} FieldSpec;
struct MsgSpec {
    const char *name;
    int nfields;
    const FieldSpec *fields;
};

static int wire_type_of(int kind) {
    switch (kind) {
        case K_VARINT:
        case K_INT32:
        case K_UINT32:
        case K_SINT32:
        case K_REP_VARINT: return 0;
        case K_FIXED64:
        case K_REP_FIXED64: return 1;
        case K_FIXED32: return 5;
        default: return 2;
    }
}

extern const MsgSpec ANY_VALUE, KEY_VALUE;
static const FieldSpec ARRAY_VALUE_FIELDS[] = {[1] = {1, K_MSG, &ANY_VALUE}};
static const MsgSpec ARRAY_VALUE = {"ArrayValue", sizeof ARRAY_VALUE_FIELDS / sizeof *ARRAY_VALUE_FIELDS, ARRAY_VALUE_FIELDS};
static const FieldSpec KVLIST_FIELDS[] = {[1] = {1, K_MSG, &KEY_VALUE}};
static const MsgSpec KVLIST = {"KeyValueList", sizeof KVLIST_FIELDS / sizeof *KVLIST_FIELDS, KVLIST_FIELDS};
static const FieldSpec ANY_VALUE_FIELDS[] = {[1] = {1, K_STRING, NULL}, [2] = {2, K_VARINT, NULL}, [3] = {3, K_VARINT, NULL}, [4] = {4, K_FIXED64, NULL}, [5] = {5, K_MSG1, &ARRAY_VALUE}, [6] = {6, K_MSG1, &KVLIST}, [7] = {7, K_BYTES, NULL}, [8] = {8, K_UNSUPPORTED, NULL}};
const MsgSpec ANY_VALUE = {"AnyValue", sizeof ANY_VALUE_FIELDS / sizeof *ANY_VALUE_FIELDS, ANY_VALUE_FIELDS};
static const FieldSpec KEY_VALUE_FIELDS[] = {[1] = {1, K_STRING, NULL}, [2] = {2, K_MSG1, &ANY_VALUE}, [3] = {3, K_UNSUPPORTED, NULL}};
const MsgSpec KEY_VALUE = {"KeyValue", sizeof KEY_VALUE_FIELDS / sizeof *KEY_VALUE_FIELDS, KEY_VALUE_FIELDS};

static const FieldSpec RESOURCE_FIELDS[] = {[1] = {1, K_MSG, &KEY_VALUE}, [2] = {2, K_UINT32, NULL}, [3] = {3, K_UNSUPPORTED, NULL}};
static const MsgSpec RESOURCE = {"Resource", sizeof RESOURCE_FIELDS / sizeof *RESOURCE_FIELDS, RESOURCE_FIELDS};
static const FieldSpec SCOPE_FIELDS[] = {[1] = {1, K_STRING, NULL}, [2] = {2, K_STRING, NULL}, [3] = {3, K_MSG, &KEY_VALUE}, [4] = {4, K_UINT32, NULL}};
static const MsgSpec SCOPE = {"InstrumentationScope", sizeof SCOPE_FIELDS / sizeof *SCOPE_FIELDS, SCOPE_FIELDS};

static const FieldSpec LOG_RECORD_FIELDS[] = {[1] = {1, K_FIXED64, NULL}, [2] = {2, K_INT32, NULL}, [3] = {3, K_STRING, NULL}, [5] = {5, K_MSG1, &ANY_VALUE}, [6] = {6, K_MSG, &KEY_VALUE}, [7] = {7, K_UINT32, NULL}, [8] = {8, K_FIXED32, NULL}, [9] = {9, K_BYTES, NULL}, [10] = {10, K_BYTES, NULL}, [11] = {11, K_FIXED64, NULL}, [12] = {12, K_STRING, NULL}};
static const MsgSpec LOG_RECORD = {"LogRecord", sizeof LOG_RECORD_FIELDS / sizeof *LOG_RECORD_FIELDS, LOG_RECORD_FIELDS};
static const FieldSpec SCOPE_LOGS_FIELDS[] = {[1] = {1, K_MSG1, &SCOPE}, [2] = {2, K_MSG, &LOG_RECORD}, [3] = {3, K_STRING, NULL}};
static const MsgSpec SCOPE_LOGS = {"ScopeLogs", sizeof SCOPE_LOGS_FIELDS / sizeof *SCOPE_LOGS_FIELDS, SCOPE_LOGS_FIELDS};
static const FieldSpec RESOURCE_LOGS_FIELDS[] = {[1] = {1, K_MSG1, &RESOURCE}, [2] = {2, K_MSG, &SCOPE_LOGS}, [3] = {3, K_STRING, NULL}};
static const MsgSpec RESOURCE_LOGS = {"ResourceLogs", sizeof RESOURCE_LOGS_FIELDS / sizeof *RESOURCE_LOGS_FIELDS, RESOURCE_LOGS_FIELDS};
static const FieldSpec LOGS_REQUEST_FIELDS[] = {[1] = {1, K_MSG, &RESOURCE_LOGS}};
static const MsgSpec LOGS_REQUEST = {"ExportLogsServiceRequest", sizeof LOGS_REQUEST_FIELDS / sizeof *LOGS_REQUEST_FIELDS, LOGS_REQUEST_FIELDS};

/* Traces (opentelemetry/proto/trace/v1/trace.proto). */
static const FieldSpec EVENT_FIELDS[] = {[1] = {1, K_FIXED64, NULL}, [2] = {2, K_STRING, NULL}, [3] = {3, K_MSG, &KEY_VALUE}, [4] = {4, K_UINT32, NULL}};
static const MsgSpec EVENT = {"Event", sizeof EVENT_FIELDS / sizeof *EVENT_FIELDS, EVENT_FIELDS};
static const FieldSpec LINK_FIELDS[] = {[1] = {1, K_BYTES, NULL}, [2] = {2, K_BYTES, NULL}, [3] = {3, K_STRING, NULL}, [4] = {4, K_MSG, &KEY_VALUE}, [5] = {5, K_UINT32, NULL}, [6] = {6, K_FIXED32, NULL}};
static const MsgSpec LINK = {"Link", sizeof LINK_FIELDS / sizeof *LINK_FIELDS, LINK_FIELDS};
static const FieldSpec STATUS_FIELDS[] = {[2] = {2, K_STRING, NULL}, [3] = {3, K_INT32, NULL}};
static const MsgSpec STATUS = {"Status", sizeof STATUS_FIELDS / sizeof *STATUS_FIELDS, STATUS_FIELDS};
static const FieldSpec SPAN_FIELDS[] = {[1] = {1, K_BYTES, NULL}, [2] = {2, K_BYTES, NULL}, [3] = {3, K_STRING, NULL}, [4] = {4, K_BYTES, NULL}, [16] = {16, K_FIXED32, NULL}, [5] = {5, K_STRING, NULL}, [6] = {6, K_INT32, NULL}, [7] = {7, K_FIXED64, NULL}, [8] = {8, K_FIXED64, NULL}, [9] = {9, K_MSG, &KEY_VALUE}, [10] = {10, K_UINT32, NULL}, [11] = {11, K_MSG, &EVENT}, [12] = {12, K_UINT32, NULL}, [13] = {13, K_MSG, &LINK}, [14] = {14, K_UINT32, NULL}, [15] = {15, K_MSG1, &STATUS}};
static const MsgSpec SPAN = {"Span", sizeof SPAN_FIELDS / sizeof *SPAN_FIELDS, SPAN_FIELDS};
static const FieldSpec SCOPE_SPANS_FIELDS[] = {[1] = {1, K_MSG1, &SCOPE}, [2] = {2, K_MSG, &SPAN}, [3] = {3, K_STRING, NULL}};
static const MsgSpec SCOPE_SPANS = {"ScopeSpans", sizeof SCOPE_SPANS_FIELDS / sizeof *SCOPE_SPANS_FIELDS, SCOPE_SPANS_FIELDS};
static const FieldSpec RESOURCE_SPANS_FIELDS[] = {[1] = {1, K_MSG1, &RESOURCE}, [2] = {2, K_MSG, &SCOPE_SPANS}, [3] = {3, K_STRING, NULL}};
static const MsgSpec RESOURCE_SPANS = {"ResourceSpans", sizeof RESOURCE_SPANS_FIELDS / sizeof *RESOURCE_SPANS_FIELDS, RESOURCE_SPANS_FIELDS};
static const FieldSpec TRACES_REQUEST_FIELDS[] = {[1] = {1, K_MSG, &RESOURCE_SPANS}};
static const MsgSpec TRACES_REQUEST = {"ExportTraceServiceRequest", sizeof TRACES_REQUEST_FIELDS / sizeof *TRACES_REQUEST_FIELDS, TRACES_REQUEST_FIELDS};

/* Metrics (opentelemetry/proto/metrics/v1/metrics.proto). Doubles and sfixed64 are K_FIXED64. */
static const FieldSpec EXEMPLAR_FIELDS[] = {[7] = {7, K_MSG, &KEY_VALUE}, [2] = {2, K_FIXED64, NULL}, [3] = {3, K_FIXED64, NULL}, [6] = {6, K_FIXED64, NULL}, [4] = {4, K_BYTES, NULL}, [5] = {5, K_BYTES, NULL}};
static const MsgSpec EXEMPLAR = {"Exemplar", sizeof EXEMPLAR_FIELDS / sizeof *EXEMPLAR_FIELDS, EXEMPLAR_FIELDS};
static const FieldSpec NUMBER_POINT_FIELDS[] = {[7] = {7, K_MSG, &KEY_VALUE}, [2] = {2, K_FIXED64, NULL}, [3] = {3, K_FIXED64, NULL}, [4] = {4, K_FIXED64, NULL}, [6] = {6, K_FIXED64, NULL}, [5] = {5, K_MSG, &EXEMPLAR}, [8] = {8, K_UINT32, NULL}};
static const MsgSpec NUMBER_POINT = {"NumberDataPoint", sizeof NUMBER_POINT_FIELDS / sizeof *NUMBER_POINT_FIELDS, NUMBER_POINT_FIELDS};
static const FieldSpec HISTOGRAM_POINT_FIELDS[] = {[9] = {9, K_MSG, &KEY_VALUE}, [2] = {2, K_FIXED64, NULL}, [3] = {3, K_FIXED64, NULL}, [4] = {4, K_FIXED64, NULL}, [5] = {5, K_FIXED64, NULL}, [6] = {6, K_REP_FIXED64, NULL}, [7] = {7, K_REP_FIXED64, NULL}, [8] = {8, K_MSG, &EXEMPLAR}, [10] = {10, K_UINT32, NULL}, [11] = {11, K_FIXED64, NULL}, [12] = {12, K_FIXED64, NULL}};
static const MsgSpec HISTOGRAM_POINT = {"HistogramDataPoint", sizeof HISTOGRAM_POINT_FIELDS / sizeof *HISTOGRAM_POINT_FIELDS, HISTOGRAM_POINT_FIELDS};
static const FieldSpec BUCKETS_FIELDS[] = {[1] = {1, K_SINT32, NULL}, [2] = {2, K_REP_VARINT, NULL}};
static const MsgSpec BUCKETS = {"Buckets", sizeof BUCKETS_FIELDS / sizeof *BUCKETS_FIELDS, BUCKETS_FIELDS};
static const FieldSpec EXP_POINT_FIELDS[] = {[1] = {1, K_MSG, &KEY_VALUE}, [2] = {2, K_FIXED64, NULL}, [3] = {3, K_FIXED64, NULL}, [4] = {4, K_FIXED64, NULL}, [5] = {5, K_FIXED64, NULL}, [6] = {6, K_SINT32, NULL}, [7] = {7, K_FIXED64, NULL}, [8] = {8, K_MSG1, &BUCKETS}, [9] = {9, K_MSG1, &BUCKETS}, [10] = {10, K_UINT32, NULL}, [11] = {11, K_MSG, &EXEMPLAR}, [12] = {12, K_FIXED64, NULL}, [13] = {13, K_FIXED64, NULL}, [14] = {14, K_FIXED64, NULL}};
static const MsgSpec EXP_POINT = {"ExponentialHistogramDataPoint", sizeof EXP_POINT_FIELDS / sizeof *EXP_POINT_FIELDS, EXP_POINT_FIELDS};
static const FieldSpec QUANTILE_FIELDS[] = {[1] = {1, K_FIXED64, NULL}, [2] = {2, K_FIXED64, NULL}};
static const MsgSpec QUANTILE = {"ValueAtQuantile", sizeof QUANTILE_FIELDS / sizeof *QUANTILE_FIELDS, QUANTILE_FIELDS};
static const FieldSpec SUMMARY_POINT_FIELDS[] = {[7] = {7, K_MSG, &KEY_VALUE}, [2] = {2, K_FIXED64, NULL}, [3] = {3, K_FIXED64, NULL}, [4] = {4, K_FIXED64, NULL}, [5] = {5, K_FIXED64, NULL}, [6] = {6, K_MSG, &QUANTILE}, [8] = {8, K_UINT32, NULL}};
static const MsgSpec SUMMARY_POINT = {"SummaryDataPoint", sizeof SUMMARY_POINT_FIELDS / sizeof *SUMMARY_POINT_FIELDS, SUMMARY_POINT_FIELDS};
static const FieldSpec GAUGE_FIELDS[] = {[1] = {1, K_MSG, &NUMBER_POINT}};
static const MsgSpec GAUGE = {"Gauge", sizeof GAUGE_FIELDS / sizeof *GAUGE_FIELDS, GAUGE_FIELDS};
static const FieldSpec SUM_FIELDS[] = {[1] = {1, K_MSG, &NUMBER_POINT}, [2] = {2, K_INT32, NULL}, [3] = {3, K_VARINT, NULL}};
static const MsgSpec SUM = {"Sum", sizeof SUM_FIELDS / sizeof *SUM_FIELDS, SUM_FIELDS};
static const FieldSpec HISTOGRAM_FIELDS[] = {[1] = {1, K_MSG, &HISTOGRAM_POINT}, [2] = {2, K_INT32, NULL}};
static const MsgSpec HISTOGRAM = {"Histogram", sizeof HISTOGRAM_FIELDS / sizeof *HISTOGRAM_FIELDS, HISTOGRAM_FIELDS};
static const FieldSpec EXP_HISTOGRAM_FIELDS[] = {[1] = {1, K_MSG, &EXP_POINT}, [2] = {2, K_INT32, NULL}};
static const MsgSpec EXP_HISTOGRAM = {"ExponentialHistogram", sizeof EXP_HISTOGRAM_FIELDS / sizeof *EXP_HISTOGRAM_FIELDS, EXP_HISTOGRAM_FIELDS};
static const FieldSpec SUMMARY_FIELDS[] = {[1] = {1, K_MSG, &SUMMARY_POINT}};
static const MsgSpec SUMMARY = {"Summary", sizeof SUMMARY_FIELDS / sizeof *SUMMARY_FIELDS, SUMMARY_FIELDS};
static const FieldSpec METRIC_FIELDS[] = {[1] = {1, K_STRING, NULL}, [2] = {2, K_STRING, NULL}, [3] = {3, K_STRING, NULL}, [5] = {5, K_MSG1, &GAUGE}, [7] = {7, K_MSG1, &SUM}, [9] = {9, K_MSG1, &HISTOGRAM}, [10] = {10, K_MSG1, &EXP_HISTOGRAM}, [11] = {11, K_MSG1, &SUMMARY}, [12] = {12, K_MSG, &KEY_VALUE}};
static const MsgSpec METRIC = {"Metric", sizeof METRIC_FIELDS / sizeof *METRIC_FIELDS, METRIC_FIELDS};
static const FieldSpec SCOPE_METRICS_FIELDS[] = {[1] = {1, K_MSG1, &SCOPE}, [2] = {2, K_MSG, &METRIC}, [3] = {3, K_STRING, NULL}};
static const MsgSpec SCOPE_METRICS = {"ScopeMetrics", sizeof SCOPE_METRICS_FIELDS / sizeof *SCOPE_METRICS_FIELDS, SCOPE_METRICS_FIELDS};
static const FieldSpec RESOURCE_METRICS_FIELDS[] = {[1] = {1, K_MSG1, &RESOURCE}, [2] = {2, K_MSG, &SCOPE_METRICS}, [3] = {3, K_STRING, NULL}};
static const MsgSpec RESOURCE_METRICS = {"ResourceMetrics", sizeof RESOURCE_METRICS_FIELDS / sizeof *RESOURCE_METRICS_FIELDS, RESOURCE_METRICS_FIELDS};
static const FieldSpec METRICS_REQUEST_FIELDS[] = {[1] = {1, K_MSG, &RESOURCE_METRICS}};
static const MsgSpec METRICS_REQUEST = {"ExportMetricsServiceRequest", sizeof METRICS_REQUEST_FIELDS / sizeof *METRICS_REQUEST_FIELDS, METRICS_REQUEST_FIELDS};

static const MsgSpec *const ALL_SPECS[] = {
    &ANY_VALUE,  &ARRAY_VALUE,    &KVLIST,          &KEY_VALUE,     &RESOURCE,      &SCOPE,           &LOG_RECORD,
    &SCOPE_LOGS, &RESOURCE_LOGS,  &LOGS_REQUEST,    &EVENT,         &LINK,          &STATUS,          &SPAN,
    &SCOPE_SPANS, &RESOURCE_SPANS, &TRACES_REQUEST, &EXEMPLAR,      &NUMBER_POINT,  &HISTOGRAM_POINT, &BUCKETS,
    &EXP_POINT,  &QUANTILE,       &SUMMARY_POINT,   &GAUGE,         &SUM,           &HISTOGRAM,       &EXP_HISTOGRAM,
    &SUMMARY,    &METRIC,         &SCOPE_METRICS,   &RESOURCE_METRICS, &METRICS_REQUEST};

/* OK when the message is one protobuf would parse and this decoder reads the same way. */
static int check_message(const MsgSpec *spec, const uint8_t *p, size_t n, int depth) {
    if (depth > CHECK_DEPTH) return UNDECIDED;
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    uint32_t seen = 0; /* singular message fields already met (by index in spec) */
    while (r.p < r.end) {
        uint32_t field;
        int wt;
        if (rd_tag(&r, &field, &wt)) return UNDECIDED;
        /* fields[] is indexed by field number (num 0: a number the message does not define) */
        int index = field < (uint32_t)spec->nfields && spec->fields[field].num ? (int)field : -1;
        if (index < 0) {
            if (rd_skip(&r, wt)) return UNDECIDED;
            continue;
        }
        const FieldSpec *f = &spec->fields[index];
        if (f->kind == K_UNSUPPORTED) return UNDECIDED;
        if (wt != wire_type_of(f->kind) && !(wt == 2 && (f->kind == K_REP_FIXED64 || f->kind == K_REP_VARINT)))
            return UNDECIDED;
        uint64_t v;
        uint32_t v32;
        const uint8_t *sub;
        size_t len;
        switch (f->kind) {
            case K_VARINT:
                if (rd_varint(&r, &v)) return UNDECIDED;
                break;
            case K_INT32: /* must be what protobuf keeps: a sign-extended int32 */
                if (rd_varint(&r, &v) || ((int64_t)v < INT32_MIN || (int64_t)v > INT32_MAX)) return UNDECIDED;
                break;
            case K_UINT32:
            case K_SINT32: /* protobuf would truncate a longer one */
                if (rd_varint(&r, &v) || v > 0xffffffffULL) return UNDECIDED;
                break;
            case K_REP_FIXED64:
                if (wt == 1) {
                    if (rd_fixed64(&r, &v)) return UNDECIDED;
                } else if (rd_bytes(&r, &sub, &len) || len % 8) {
                    return UNDECIDED;
                }
                break;
            case K_REP_VARINT:
                if (wt == 0) {
                    if (rd_varint(&r, &v)) return UNDECIDED;
                } else {
                    if (rd_bytes(&r, &sub, &len)) return UNDECIDED;
                    Rd packed = {sub ? sub : NOTHING, (sub ? sub : NOTHING) + len};
                    while (packed.p < packed.end)
                        if (rd_varint(&packed, &v)) return UNDECIDED;
                }
                break;
            case K_FIXED64:
                if (rd_fixed64(&r, &v)) return UNDECIDED;
                break;
            case K_FIXED32:
                if (rd_fixed32(&r, &v32)) return UNDECIDED;
                break;
            case K_STRING:
                if (rd_bytes(&r, &sub, &len) || !utf8_valid(sub, len)) return UNDECIDED;
                break;
            case K_BYTES:
                if (rd_bytes(&r, &sub, &len)) return UNDECIDED;
                break;
            case K_MSG1:
                if (seen & (1u << index)) return UNDECIDED;
                seen |= 1u << index;
                /* fall through */
            case K_MSG: {
                if (rd_bytes(&r, &sub, &len)) return UNDECIDED;
                int status = check_message(f->sub, sub, len, depth + 1);
                if (status) return status;
                break;
            }
            default: return UNDECIDED;
        }
    }
    return OK;
}

/* ------------------------------------------------------------------------------------ */
/* Reading checked messages (no error paths: the body passed check_message).             */

/* Iterate the occurrences of one length-delimited field. */
typedef struct {
    Rd r;
    uint32_t field;
} Iter;

static Iter iter_of(const uint8_t *p, size_t n, uint32_t field) {
    if (!p) p = NOTHING, n = 0;
    Iter it = {{p, p + n}, field};
    return it;
}

static int iter_next(Iter *it, const uint8_t **p, size_t *n) {
    while (it->r.p < it->r.end) {
        uint32_t field;
        int wt;
        rd_tag(&it->r, &field, &wt);
        if (field == it->field && wt == 2) {
            rd_bytes(&it->r, p, n);
            return 1;
        }
        rd_skip(&it->r, wt);
    }
    return 0;
}

/* The last occurrence of a length-delimited field; found=0 if absent. */
static int last_bytes(const uint8_t *p, size_t n, uint32_t field, const uint8_t **out, size_t *len) {
    Iter it = iter_of(p, n, field);
    int found = 0;
    const uint8_t *q;
    size_t m;
    while (iter_next(&it, &q, &m)) {
        *out = q;
        *len = m;
        found = 1;
    }
    if (!found) {
        *out = NULL;
        *len = 0;
    }
    return found;
}

enum { AV_NONE, AV_STRING, AV_BOOL, AV_INT, AV_DOUBLE, AV_ARRAY, AV_KVLIST, AV_BYTES };

typedef struct {
    int kind;
    uint64_t scalar;
    const uint8_t *p;
    size_t n;
} Any;

/* The oneof member of an AnyValue that protobuf keeps: the last one on the wire. */
static Any any_read(const uint8_t *p, size_t n) {
    Any a = {AV_NONE, 0, NULL, 0};
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    while (r.p < r.end) {
        uint32_t field;
        int wt;
        rd_tag(&r, &field, &wt);
        if (field >= 1 && field <= 7) {
            a.kind = (int)field; /* AV_* numbers follow the field numbers */
            if (wt == 2)
                rd_bytes(&r, &a.p, &a.n);
            else if (wt == 0)
                rd_varint(&r, &a.scalar);
            else if (wt == 1)
                rd_fixed64(&r, &a.scalar);
            else
                rd_skip(&r, wt);
        } else {
            rd_skip(&r, wt);
        }
    }
    return a;
}

typedef struct {
    const uint8_t *key;
    size_t klen;
    Any value; /* read once; AV_NONE also when the KeyValue has no value (both have no text, JSON null) */
} Entry;

typedef struct {
    Entry *items;
    size_t n, cap;
    int too_deep; /* a value (repeated keys included) nests past MAX_ANY_VALUE_DEPTH */
    /* open-addressing index over items, used once a list is long */
    int32_t *slots;
    size_t nslots;
} Entries;

static void entries_free(Entries *e) {
    free(e->items);
    free(e->slots);
    memset(e, 0, sizeof *e);
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

#define LINEAR_LIMIT 16

static int entries_rehash(Entries *e, size_t nslots) {
    int32_t *slots = malloc(nslots * sizeof *slots);
    if (!slots) return NOMEM;
    for (size_t i = 0; i < nslots; i++) slots[i] = -1;
    for (size_t i = 0; i < e->n; i++) {
        size_t s = hash_bytes(e->items[i].key, e->items[i].klen) & (nslots - 1);
        while (slots[s] >= 0) s = (s + 1) & (nslots - 1);
        slots[s] = (int32_t)i;
    }
    free(e->slots);
    e->slots = slots;
    e->nslots = nslots;
    return OK;
}

/* Add a pair; a repeated key keeps its first position and takes the new value (a Python dict). */
static int entries_add(Entries *e, const uint8_t *key, size_t klen, Any value) {
    if (e->n < LINEAR_LIMIT && !e->slots) {
        for (size_t i = 0; i < e->n; i++)
            if (e->items[i].klen == klen && memcmp(e->items[i].key, key, klen) == 0) {
                e->items[i].value = value;
                return OK;
            }
    } else {
        if (!e->slots || e->n * 2 >= e->nslots) {
            size_t nslots = 64;
            while (nslots < e->n * 4) nslots *= 2;
            if (entries_rehash(e, nslots)) return NOMEM;
        }
        size_t s = hash_bytes(key, klen) & (e->nslots - 1);
        while (e->slots[s] >= 0) {
            Entry *it = &e->items[e->slots[s]];
            if (it->klen == klen && memcmp(it->key, key, klen) == 0) {
                it->value = value;
                return OK;
            }
            s = (s + 1) & (e->nslots - 1);
        }
        e->slots[s] = (int32_t)e->n;
    }
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        Entry *items = realloc(e->items, cap * sizeof *items);
        if (!items) return NOMEM;
        e->items = items;
        e->cap = cap;
    }
    Entry *it = &e->items[e->n++];
    it->key = key;
    it->klen = klen;
    it->value = value;
    return OK;
}

static void entries_clear(Entries *e) {
    e->n = 0;
    e->too_deep = 0;
    if (e->slots) {
        free(e->slots);
        e->slots = NULL;
        e->nslots = 0;
    }
}

/* A KeyValue's key and value (the last of each, as protobuf keeps), in one pass; value NULL if absent. */
static void kv_read(const uint8_t *p, size_t n, const uint8_t **key, size_t *klen, const uint8_t **value,
                    size_t *vlen) {
    *key = (const uint8_t *)"";
    *klen = 0;
    *value = NULL;
    *vlen = 0;
    Rd r = {p, p + n};
    while (r.p < r.end) {
        uint32_t field;
        int wt;
        rd_tag(&r, &field, &wt);
        if (field == 1 && wt == 2)
            rd_bytes(&r, key, klen);
        else if (field == 2 && wt == 2)
            rd_bytes(&r, value, vlen);
        else
            rd_skip(&r, wt);
    }
}

static int too_deep(const uint8_t *p, size_t n, int depth);

/* The KeyValue list under ``field`` of a message, deduplicated like a Python dict; with
 * ``check_depth``, out->too_deep says whether a value (every one counts, repeated keys
 * included: the Python dict evaluates them all) nests too deep. */
static int read_pairs(const uint8_t *p, size_t n, uint32_t field, Entries *out, int check_depth) {
    entries_clear(out);
    Iter it = iter_of(p, n, field);
    const uint8_t *kv;
    size_t kvlen;
    while (iter_next(&it, &kv, &kvlen)) {
        const uint8_t *key, *value;
        size_t klen, vlen;
        kv_read(kv, kvlen, &key, &klen, &value, &vlen);
        Any a = {AV_NONE, 0, NULL, 0};
        if (value) {
            a = any_read(value, vlen);
            if (check_depth && !out->too_deep && (a.kind == AV_ARRAY || a.kind == AV_KVLIST))
                out->too_deep = too_deep(value, vlen, 0);
        }
        if (entries_add(out, key, klen, a)) return NOMEM;
    }
    return OK;
}

/* Whether an AnyValue reaches MAX_ANY_VALUE_DEPTH as flatten.common._json_form walks it:
 * every element and every pair's value (repeated keys included) one level down. */
static int too_deep(const uint8_t *p, size_t n, int depth) {
    if (depth >= MAX_ANY_VALUE_DEPTH) return 1;
    if (!p) return 0;
    Any a = any_read(p, n);
    if (a.kind != AV_ARRAY && a.kind != AV_KVLIST) return 0;
    Iter it = iter_of(a.p, a.n, 1);
    const uint8_t *item;
    size_t len;
    while (iter_next(&it, &item, &len)) {
        const uint8_t *child = item;
        size_t clen = len;
        if (a.kind == AV_KVLIST && !last_bytes(item, len, 2, &child, &clen)) child = NULL;
        if (too_deep(child, clen, depth + 1)) return 1;
    }
    return 0;
}

/* Whether an AnyValue at the top of an attribute or body is rejected for its depth. */
static int value_too_deep(const uint8_t *p, size_t n) {
    if (!p) return 0;
    Any a = any_read(p, n);
    return (a.kind == AV_ARRAY || a.kind == AV_KVLIST) && too_deep(p, n, 0);
}

/* ------------------------------------------------------------------------------------ */
/* Text forms (flatten.common.any_value_text and _json_form, byte for byte).             */

/* The decimal digits of ``v`` at the end of s[0..20), returned as their first position. */
static int decimal_digits(char s[20], uint64_t v) {
    int k = 20;
    do {
        s[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return k;
}

static int put_int(Buf *b, int64_t v) {
    char s[21];
    uint64_t magnitude = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int k = decimal_digits(s + 1, magnitude) + 1;
    if (v < 0) s[--k] = '-';
    return buf_put(b, s + k, (size_t)(21 - k));
}

/* The shortest decimal digits that read back as ``v`` (> 0), like Python's repr: at each length
 * the correctly rounded digits, or a neighbour of them (next to a power of two the rounding
 * interval is lopsided, and the nearest digits may miss it while the next ones hit it). */
static void shortest_digits(double v, char *digits, int *nd, int *exponent) {
    char s[64];
    if (v < 1e15 && v == (double)(uint64_t)v) { /* an integer: its digits are the shortest */
        int k = decimal_digits(s, (uint64_t)v);
        *nd = 20 - k;
        *exponent = *nd - 1;
        memcpy(digits, s + k, (size_t)*nd);
        while (*nd > 1 && digits[*nd - 1] == '0') (*nd)--;
        return;
    }
    /* A normal double has one decimal of at most 15 digits that reads back as it, if any (DBL_DIG):
     * the correctly rounded 15 digits, so shorter precisions need not be tried one by one. */
    int precision = v >= DBL_MIN ? 15 : 1;
    uint64_t power = precision == 15 ? 100000000000000ULL : 1; /* 10^(precision-1) */
    for (; precision <= 17; precision++, power *= 10) {
        snprintf(s, sizeof s, "%.*e", precision - 1, v);
        uint64_t mantissa = 0;
        const char *q = s;
        for (; *q && *q != 'e'; q++)
            if (*q != '.') mantissa = mantissa * 10 + (uint64_t)(*q - '0');
        int e = atoi(q + 1);
        if (strtod(s, NULL) != v && precision < 17) {
            int found = 0;
            for (int delta = -1; delta <= 1 && !found; delta += 2) {
                uint64_t m = mantissa + (uint64_t)(int64_t)delta;
                int me = e;
                if (m == power * 10) {
                    m = power;
                    me = e + 1;
                }
                if (m < power) continue;
                snprintf(s, sizeof s, "%llue%d", (unsigned long long)m, me - (precision - 1));
                if (strtod(s, NULL) == v) {
                    mantissa = m;
                    e = me;
                    found = 1;
                }
            }
            if (!found) continue;
        }
        snprintf(s, sizeof s, "%llu", (unsigned long long)mantissa);
        *nd = (int)strlen(s);
        memcpy(digits, s, (size_t)*nd);
        while (*nd > 1 && digits[*nd - 1] == '0') (*nd)--;
        *exponent = e;
        return;
    }
}

/* repr(float) of a finite double: the shortest digits that read back as the same value,
 * in fixed notation unless the exponent is below -4 or above 15. */
static int put_double_repr(Buf *b, double v) {
    if (v == 0) return buf_str(b, signbit(v) ? "-0.0" : "0.0");
    char digits[32];
    int nd, exponent, negative = v < 0;
    shortest_digits(fabs(v), digits, &nd, &exponent);
    int decpt = exponent + 1;
    char out[64];
    int k = 0;
    if (negative) out[k++] = '-';
    if (decpt > 16 || decpt < -3) {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = digits[i];
        }
        k += snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
    } else if (decpt <= 0) {
        out[k++] = '0';
        out[k++] = '.';
        for (int i = 0; i < -decpt; i++) out[k++] = '0';
        for (int i = 0; i < nd; i++) out[k++] = digits[i];
    } else if (decpt >= nd) {
        for (int i = 0; i < nd; i++) out[k++] = digits[i];
        for (int i = nd; i < decpt; i++) out[k++] = '0';
        out[k++] = '.';
        out[k++] = '0';
    } else {
        for (int i = 0; i < decpt; i++) out[k++] = digits[i];
        out[k++] = '.';
        for (int i = decpt; i < nd; i++) out[k++] = digits[i];
    }
    return buf_put(b, out, (size_t)k);
}

static double as_double(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* double_text: NaN and infinities spelled as in OTLP/JSON. */
static int put_double_text(Buf *b, double v) {
    if (isnan(v)) return buf_str(b, "NaN");
    if (isinf(v)) return buf_str(b, v > 0 ? "Infinity" : "-Infinity");
    return put_double_repr(b, v);
}

static int put_base64(Buf *b, const uint8_t *p, size_t n) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (buf_reserve(b, (n + 2) / 3 * 4)) return NOMEM;
    uint8_t *o = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = alphabet[x >> 18];
        *o++ = alphabet[(x >> 12) & 63];
        *o++ = alphabet[(x >> 6) & 63];
        *o++ = alphabet[x & 63];
    }
    if (n - i == 1) {
        uint32_t x = (uint32_t)p[i] << 16;
        *o++ = alphabet[x >> 18];
        *o++ = alphabet[(x >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = alphabet[x >> 18];
        *o++ = alphabet[(x >> 12) & 63];
        *o++ = alphabet[(x >> 6) & 63];
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    return OK;
}

/* A JSON string as json.dumps(ensure_ascii=False) writes it. */
static int put_json_string(Buf *b, const uint8_t *p, size_t n) {
    if (buf_reserve(b, n + 2)) return NOMEM;
    b->p[b->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (buf_put(b, p + run, i - run)) return NOMEM;
        run = i + 1;
        char esc[8];
        const char *e = esc;
        switch (c) {
            case '"': e = "\\\""; break;
            case '\\': e = "\\\\"; break;
            case '\n': e = "\\n"; break;
            case '\r': e = "\\r"; break;
            case '\t': e = "\\t"; break;
            case '\b': e = "\\b"; break;
            case '\f': e = "\\f"; break;
            default: snprintf(esc, sizeof esc, "\\u%04x", c);
        }
        if (buf_str(b, e)) return NOMEM;
    }
    if (buf_put(b, p + run, n - run) || buf_put(b, "\"", 1)) return NOMEM;
    return OK;
}

static int put_json(Buf *b, const uint8_t *p, size_t n);

static int put_json_any(Buf *b, Any a) {
    switch (a.kind) {
        case AV_NONE: return buf_str(b, "null");
        case AV_STRING: return put_json_string(b, a.p, a.n);
        case AV_BOOL: return buf_str(b, a.scalar ? "true" : "false");
        case AV_INT: return put_int(b, (int64_t)a.scalar);
        case AV_DOUBLE: {
            double d = as_double(a.scalar);
            if (isfinite(d)) return put_double_repr(b, d);
            if (buf_put(b, "\"", 1) || put_double_text(b, d) || buf_put(b, "\"", 1)) return NOMEM;
            return OK;
        }
        case AV_BYTES:
            if (buf_put(b, "\"", 1) || put_base64(b, a.p, a.n) || buf_put(b, "\"", 1)) return NOMEM;
            return OK;
        case AV_ARRAY: {
            if (buf_put(b, "[", 1)) return NOMEM;
            Iter it = iter_of(a.p, a.n, 1);
            const uint8_t *item;
            size_t len;
            int first = 1;
            while (iter_next(&it, &item, &len)) {
                if (!first && buf_put(b, ",", 1)) return NOMEM;
                first = 0;
                if (put_json(b, item, len)) return NOMEM;
            }
            return buf_put(b, "]", 1) ? NOMEM : OK;
        }
        case AV_KVLIST: {
            Entries pairs = {0};
            int status = read_pairs(a.p, a.n, 1, &pairs, 0);
            if (!status) status = buf_put(b, "{", 1) ? NOMEM : OK;
            for (size_t i = 0; !status && i < pairs.n; i++) {
                if (i && buf_put(b, ",", 1)) status = NOMEM;
                if (!status) status = put_json_string(b, pairs.items[i].key, pairs.items[i].klen);
                if (!status && buf_put(b, ":", 1)) status = NOMEM;
                if (!status) status = put_json_any(b, pairs.items[i].value);
            }
            if (!status && buf_put(b, "}", 1)) status = NOMEM;
            entries_free(&pairs);
            return status;
        }
    }
    return OK;
}

static int put_json(Buf *b, const uint8_t *p, size_t n) {
    if (!p) return buf_str(b, "null");
    return put_json_any(b, any_read(p, n));
}

/* any_value_text into ``b``; *is_null when the value has no text (NULL). */
static int put_text_any(Buf *b, Any a, int *is_null) {
    *is_null = 0;
    switch (a.kind) {
        case AV_NONE: *is_null = 1; return OK;
        case AV_STRING: return buf_put(b, a.p, a.n) ? NOMEM : OK;
        case AV_BOOL: return buf_str(b, a.scalar ? "true" : "false") ? NOMEM : OK;
        case AV_INT: return put_int(b, (int64_t)a.scalar) ? NOMEM : OK;
        case AV_DOUBLE: return put_double_text(b, as_double(a.scalar)) ? NOMEM : OK;
        case AV_BYTES: return put_base64(b, a.p, a.n);
        default: return put_json_any(b, a);
    }
}

/* The same for an AnyValue message (NULL: absent). */
static int put_text(Buf *b, const uint8_t *p, size_t n, int *is_null) {
    Any none = {AV_NONE, 0, NULL, 0};
    return put_text_any(b, p ? any_read(p, n) : none, is_null);
}

/* ------------------------------------------------------------------------------------ */
/* Resource and scope: read once, copied into every row under them.                      */

typedef struct {
    const uint8_t *p; /* the Resource message (NULL: absent) */
    size_t n;
    Entries attributes;
    uint32_t dropped;
    int too_deep;
} ResourceValue;

typedef struct {
    const uint8_t *p;
    size_t n;
    const uint8_t *name, *version;
    size_t name_len, version_len;
    Entries attributes;
    uint32_t dropped;
    int too_deep;
} ScopeValue;

static uint64_t last_varint(const uint8_t *p, size_t n, uint32_t field) {
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    uint64_t value = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        rd_tag(&r, &f, &wt);
        if (f == field && wt == 0)
            rd_varint(&r, &value);
        else
            rd_skip(&r, wt);
    }
    return value;
}

/* Whether a value of the KeyValue list under ``field`` nests too deep (read_pairs' check). */
static int pairs_too_deep(const uint8_t *p, size_t n, uint32_t field) {
    /* Every pair counts, repeated keys included: the Python dict evaluates them all. */
    Iter it = iter_of(p, n, field);
    const uint8_t *kv, *key, *value;
    size_t kvlen, klen, vlen;
    while (iter_next(&it, &kv, &kvlen)) {
        kv_read(kv, kvlen, &key, &klen, &value, &vlen);
        if (value_too_deep(value, vlen)) return 1;
    }
    return 0;
}

static int resource_read(ResourceValue *rv, const uint8_t *p, size_t n) {
    rv->p = p;
    rv->n = n;
    int status = read_pairs(p, n, 1, &rv->attributes, 1);
    rv->dropped = (uint32_t)last_varint(p, n, 2);
    rv->too_deep = rv->attributes.too_deep;
    return status;
}

static int scope_read(ScopeValue *sv, const uint8_t *p, size_t n) {
    sv->p = p;
    sv->n = n;
    last_bytes(p, n, 1, &sv->name, &sv->name_len);
    last_bytes(p, n, 2, &sv->version, &sv->version_len);
    int status = read_pairs(p, n, 3, &sv->attributes, 1);
    sv->dropped = (uint32_t)last_varint(p, n, 4);
    sv->too_deep = sv->attributes.too_deep;
    return status;
}

/* ------------------------------------------------------------------------------------ */
/* Generic Arrow builders for the spans and metrics tables: a tree of columns laid out   */
/* from a short description of the schema (LAYOUT_*), exported whole at the end.          */

enum { T_STR, T_I64, T_I32, T_F64, T_BOOL, T_LIST, T_MAP, T_STRUCT };

typedef struct Col Col;
struct Col {
    int type;
    int64_t n, nulls;
    Buf validity, offsets, data; /* offsets: strings, lists, maps; data: strings' bytes, values, bits */
    int nchildren;               /* list: 1; map: 2 (keys, values); struct: its fields */
    Col *children;
    size_t *total; /* the table's running byte count (for max_output_bytes) */
};

/* Layout letters: s string, l int64, i int32, d double, b bool, M map<string,string>,
 * [X] list of X, {...} struct of its fields. */
static int col_init(Col *c, const char **desc, size_t *total) {
    memset(c, 0, sizeof *c);
    c->total = total;
    char letter = *(*desc)++;
    int32_t zero = 0;
    switch (letter) {
        case 's': c->type = T_STR; break;
        case 'l': c->type = T_I64; return OK;
        case 'i': c->type = T_I32; return OK;
        case 'd': c->type = T_F64; return OK;
        case 'b': c->type = T_BOOL; return OK;
        case 'M': {
            c->type = T_MAP;
            c->nchildren = 2;
            c->children = calloc(2, sizeof *c->children);
            if (!c->children) return NOMEM;
            const char *keys = "s", *values = "s";
            if (col_init(&c->children[0], &keys, total) || col_init(&c->children[1], &values, total)) return NOMEM;
            break;
        }
        case '[':
            c->type = T_LIST;
            c->nchildren = 1;
            c->children = calloc(1, sizeof *c->children);
            if (!c->children || col_init(&c->children[0], desc, total)) return NOMEM;
            (*desc)++; /* ']' */
            break;
        case '{': {
            c->type = T_STRUCT;
            int count = 0, level = 0;
            for (const char *q = *desc; level >= 0 && *q; q++) {
                if (level == 0 && *q != '}' && *q != ']') count++;
                if (*q == '{' || *q == '[') level++;
                if (*q == '}' || *q == ']') level--;
            }
            c->nchildren = count;
            c->children = calloc((size_t)count, sizeof *c->children);
            if (!c->children) return NOMEM;
            for (int i = 0; i < count; i++)
                if (col_init(&c->children[i], desc, total)) return NOMEM;
            (*desc)++; /* '}' */
            return OK;
        }
        default: return NOMEM;
    }
    return buf_put(&c->offsets, &zero, 4) ? NOMEM : OK;
}

static void col_free(Col *c) {
    buf_free(&c->validity);
    buf_free(&c->offsets);
    buf_free(&c->data);
    for (int i = 0; i < c->nchildren; i++) col_free(&c->children[i]);
    free(c->children);
    c->children = NULL;
    c->nchildren = 0;
}

static size_t col_bytes(const Col *c) {
    size_t size = c->validity.len + c->offsets.len + c->data.len;
    for (int i = 0; i < c->nchildren; i++) size += col_bytes(&c->children[i]);
    return size;
}

/* Ends a slot: its validity bit, the count, the nulls. */
HOT int col_slot(Col *c, int valid) {
    size_t need = (size_t)(c->n / 8 + 1);
    if (c->validity.len < need) {
        size_t old = c->validity.len;
        if (buf_reserve(&c->validity, need - old)) return NOMEM;
        memset(c->validity.p + old, 0, need - old);
        c->validity.len = need;
    }
    if (valid)
        c->validity.p[c->n / 8] |= (uint8_t)(1u << (c->n % 8));
    else
        c->nulls++;
    c->n++;
    return OK;
}

/* Ends a string, list or map slot whose contents were appended already. */
HOT int col_end_var(Col *c, int valid) {
    size_t end;
    if (c->type == T_STR) {
        end = c->data.len;
        int32_t previous;
        memcpy(&previous, c->offsets.p + c->offsets.len - 4, 4);
        *c->total += end - (size_t)previous + 4;
    } else {
        end = (size_t)c->children[0].n;
        *c->total += 4;
    }
    if (end > (size_t)INT32_LIMIT) return UNDECIDED; /* past Arrow's 32-bit offsets */
    int32_t offset = (int32_t)end;
    if (buf_put(&c->offsets, &offset, 4)) return NOMEM;
    return col_slot(c, valid);
}

static int col_fixed(Col *c, const void *v, size_t size, int valid) {
    if (buf_put(&c->data, v, size)) return NOMEM;
    *c->total += size;
    return col_slot(c, valid);
}

static int col_null(Col *c) {
    int64_t zero = 0;
    switch (c->type) {
        case T_STR:
        case T_LIST:
        case T_MAP: return col_end_var(c, 0);
        case T_I64:
        case T_F64: return col_fixed(c, &zero, 8, 0);
        case T_I32: return col_fixed(c, &zero, 4, 0);
        case T_BOOL: {
            size_t need = (size_t)(c->n / 8 + 1);
            if (c->data.len < need) {
                if (buf_put(&c->data, &zero, 1)) return NOMEM;
            }
            return col_slot(c, 0);
        }
        default:
            for (int i = 0; i < c->nchildren; i++) {
                int s = col_null(&c->children[i]);
                if (s) return s;
            }
            return col_slot(c, 0);
    }
}

static int col_str(Col *c, const uint8_t *p, size_t n) {
    if (buf_put(&c->data, p, n)) return NOMEM;
    return col_end_var(c, 1);
}
static int col_text(Col *c, const uint8_t *p, size_t n) { return n ? col_str(c, p, n) : col_end_var(c, 0); }
static int col_i64(Col *c, int64_t v) { return col_fixed(c, &v, 8, 1); }
static int col_i32(Col *c, uint32_t bits) {
    int32_t v = (int32_t)bits;
    return col_fixed(c, &v, 4, 1);
}
static int col_f64(Col *c, double v) { return col_fixed(c, &v, 8, 1); }
static int col_f64_or_null(Col *c, int present, double v) { return col_fixed(c, &v, 8, present); }
static int col_bool(Col *c, int v) {
    size_t need = (size_t)(c->n / 8 + 1);
    if (c->data.len < need) {
        uint8_t zero = 0;
        if (buf_put(&c->data, &zero, 1)) return NOMEM;
    }
    if (v) c->data.p[c->n / 8] |= (uint8_t)(1u << (c->n % 8));
    return col_slot(c, 1);
}
static int col_hex(Col *c, const uint8_t *p, size_t n) {
    if (!n) return col_end_var(c, 0);
    static const char digits[] = "0123456789abcdef";
    if (buf_reserve(&c->data, 2 * n)) return NOMEM;
    for (size_t i = 0; i < n; i++) {
        c->data.p[c->data.len++] = (uint8_t)digits[p[i] >> 4];
        c->data.p[c->data.len++] = (uint8_t)digits[p[i] & 15];
    }
    return col_end_var(c, 1);
}
static int col_enum(Col *c, char names[][40], int count, int32_t number) {
    if (number >= 0 && number < count && names[number][0])
        return col_str(c, (const uint8_t *)names[number], strlen(names[number]));
    char s[16];
    int k = snprintf(s, sizeof s, "%d", number);
    return col_str(c, (const uint8_t *)s, (size_t)k);
}

/* A map row from deduplicated pairs: each value's text (any_value_text). */
static int col_pairs(Col *m, const Entries *pairs) {
    Col *keys = &m->children[0], *values = &m->children[1];
    for (size_t i = 0; i < pairs->n; i++) {
        const Entry *e = &pairs->items[i];
        int s = col_str(keys, e->key, e->klen);
        if (s) return s;
        int is_null;
        if (put_text_any(&values->data, e->value, &is_null)) return NOMEM;
        if ((s = col_end_var(values, !is_null))) return s;
    }
    return col_end_var(m, 1);
}

/* The KeyValue list under ``field`` of a message as a map row. */
static int col_attributes(Col *m, Entries *scratch, const uint8_t *p, size_t n, uint32_t field) {
    int s = read_pairs(p, n, field, scratch, 0);
    return s ? s : col_pairs(m, scratch);
}

/* ------------------------------------------------------------------------------------ */
/* Scalar fields of a checked message: the last occurrence wins, as in protobuf.          */

static uint64_t last_fixed64(const uint8_t *p, size_t n, uint32_t field, int *found) {
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    uint64_t value = 0;
    if (found) *found = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        rd_tag(&r, &f, &wt);
        if (f == field && wt == 1) {
            rd_fixed64(&r, &value);
            if (found) *found = 1;
        } else {
            rd_skip(&r, wt);
        }
    }
    return value;
}

static int32_t zigzag32(uint64_t v) {
    uint32_t u = (uint32_t)v;
    return (int32_t)((u >> 1) ^ (~(u & 1) + 1));
}

/* Repeated fixed64 / uint64 values (packed or not), in wire order. */
typedef struct {
    Rd r, packed;
    uint32_t field;
    int varint;
} RepIter;

static RepIter rep_of(const uint8_t *p, size_t n, uint32_t field, int varint) {
    if (!p) p = NOTHING, n = 0;
    RepIter it = {{p, p + n}, {NOTHING, NOTHING}, field, varint};
    return it;
}

static int rep_next(RepIter *it, uint64_t *v) {
    for (;;) {
        if (it->packed.p < it->packed.end) {
            if (it->varint)
                rd_varint(&it->packed, v);
            else
                rd_fixed64(&it->packed, v);
            return 1;
        }
        if (it->r.p >= it->r.end) return 0;
        uint32_t f;
        int wt;
        rd_tag(&it->r, &f, &wt);
        if (f == it->field && wt == 2) {
            const uint8_t *q;
            size_t len;
            rd_bytes(&it->r, &q, &len);
            if (!q) q = NOTHING, len = 0;
            it->packed.p = q;
            it->packed.end = q + len;
        } else if (f == it->field && wt == (it->varint ? 0 : 1)) {
            if (it->varint)
                rd_varint(&it->r, v);
            else
                rd_fixed64(&it->r, v);
            return 1;
        } else {
            rd_skip(&it->r, wt);
        }
    }
}

/* A LONG list column from repeated values; *above set when one is past 2^63-1. */
static int col_longs(Col *list, const uint8_t *p, size_t n, uint32_t field, int varint) {
    RepIter it = rep_of(p, n, field, varint);
    uint64_t v;
    while (rep_next(&it, &v)) {
        int s = col_i64(&list->children[0], (int64_t)v);
        if (s) return s;
    }
    return col_end_var(list, 1);
}

static int longs_above(const uint8_t *p, size_t n, uint32_t field, int varint) {
    RepIter it = rep_of(p, n, field, varint);
    uint64_t v;
    while (rep_next(&it, &v))
        if (v > (uint64_t)INT64_MAX) return 1;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* A table of the generic builders, with rejections and the context columns.             */

typedef struct {
    Col root; /* the top struct: one child per column */
    size_t total;
    int64_t rows, rejected, max_output;
    char first_error[200];
    const char *noun;
    Entries scratch; /* the pairs of the value being appended */
} Table;

static Table *table_new(const char *layout, const char *noun, int64_t max_output) {
    Table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->noun = noun;
    t->max_output = max_output;
    const char *desc = layout;
    if (col_init(&t->root, &desc, &t->total)) {
        col_free(&t->root);
        free(t);
        return NULL;
    }
    return t;
}

static void table_free(Table *t) {
    col_free(&t->root);
    entries_free(&t->scratch);
    free(t);
}

static void table_reject(Table *t, int64_t index, const char *reason) {
    if (!t->rejected) snprintf(t->first_error, sizeof t->first_error, "%s %lld: %s", t->noun, (long long)index, reason);
    t->rejected++;
}

#define TOO_DEEP_REASON "an attribute or body nests deeper than 32 levels"

/* What every row under one scope shares: its resource, scope and their schema URLs. */
typedef struct {
    ResourceValue rv;
    ScopeValue sv;
    const uint8_t *rurl, *surl;
    size_t rurl_len, surl_len;
    int64_t first_row; /* the first row written under this scope; -1 before it */
} Context;

static int bit_of(const Buf *b, int64_t i) { return (b->p[i / 8] >> (i % 8)) & 1; }

/* Appends slots [from, from + count) of ``c`` once more, children included, as the builders
 * above would write them again (the same bytes, validity and byte count). */
static int col_copy(Col *c, int64_t from, int64_t count) {
    int s;
    size_t width = c->type == T_I64 || c->type == T_F64 ? 8 : c->type == T_I32 ? 4 : 0;
    if (c->type == T_STR || c->type == T_LIST || c->type == T_MAP) {
        int32_t start, end;
        memcpy(&start, c->offsets.p + 4 * from, 4);
        memcpy(&end, c->offsets.p + 4 * (from + count), 4);
        size_t base;
        if (c->type == T_STR) {
            size_t bytes = (size_t)(end - start);
            if (buf_reserve(&c->data, bytes)) return NOMEM;
            base = c->data.len;
            memcpy(c->data.p + base, c->data.p + start, bytes);
            c->data.len += bytes;
            *c->total += bytes;
        } else {
            base = (size_t)c->children[0].n;
            for (int i = 0; i < c->nchildren; i++)
                if ((s = col_copy(&c->children[i], start, end - start))) return s;
        }
        if (base + (size_t)(end - start) > (size_t)INT32_LIMIT) return UNDECIDED; /* past Arrow's 32-bit offsets */
        if (buf_reserve(&c->offsets, 4 * (size_t)count)) return NOMEM;
        const int32_t *source = (const int32_t *)c->offsets.p + from + 1; /* int32-aligned: malloc'd, 4 a slot */
        int32_t *target = (int32_t *)(c->offsets.p + c->offsets.len), shift = (int32_t)base - start;
        for (int64_t i = 0; i < count; i++) target[i] = source[i] + shift;
        c->offsets.len += 4 * (size_t)count;
        *c->total += 4 * (size_t)count;
    } else if (width) {
        if (buf_reserve(&c->data, width * (size_t)count)) return NOMEM;
        memcpy(c->data.p + c->data.len, c->data.p + width * (size_t)from, width * (size_t)count);
        c->data.len += width * (size_t)count;
        *c->total += width * (size_t)count;
    } else if (c->type == T_STRUCT) {
        for (int i = 0; i < c->nchildren; i++)
            if ((s = col_copy(&c->children[i], from, count))) return s;
    }
    for (int64_t i = 0; i < count; i++) {
        if (c->type == T_BOOL) { /* the value bit, as col_bool and col_null set it */
            size_t need = (size_t)(c->n / 8 + 1);
            if (c->data.len < need) {
                uint8_t zero = 0;
                if (buf_put(&c->data, &zero, 1)) return NOMEM;
            }
            if (bit_of(&c->data, from + i)) c->data.p[c->n / 8] |= (uint8_t)(1u << (c->n % 8));
        }
        if ((s = col_slot(c, bit_of(&c->validity, from + i)))) return s;
    }
    return OK;
}

/* The four context columns (resource, its schema URL, scope, its schema URL) from ``c``: written
 * for the first row under a scope, copied for the next ones. */
static int context_row(Col *c, Context *x) {
    int s;
    if (x->first_row >= 0) {
        for (int i = 0; i < 4; i++)
            if ((s = col_copy(&c[i], x->first_row, 1))) return s;
        return OK;
    }
    x->first_row = c[0].n;
    const ResourceValue *rv = &x->rv;
    const ScopeValue *sv = &x->sv;
    if ((s = col_pairs(&c[0].children[0], &rv->attributes))) return s;
    if ((s = col_i32(&c[0].children[1], rv->dropped))) return s;
    if ((s = col_slot(&c[0], 1))) return s;
    if ((s = col_text(&c[1], x->rurl, x->rurl_len))) return s;
    Col *scope = &c[2];
    if ((s = col_text(&scope->children[0], sv->name, sv->name_len))) return s;
    if ((s = col_text(&scope->children[1], sv->version, sv->version_len))) return s;
    if ((s = col_pairs(&scope->children[2], &sv->attributes))) return s;
    if ((s = col_i32(&scope->children[3], sv->dropped))) return s;
    if ((s = col_slot(scope, 1))) return s;
    return col_text(&c[3], x->surl, x->surl_len);
}

/* One row done: the top struct's slot, and the budget. */
static int table_row_done(Table *t) {
    int s = col_slot(&t->root, 1);
    if (s) return s;
    t->rows++;
    *t->root.total += 16; /* validity bits and slack, like logs_bytes' per-row count */
    if (t->max_output >= 0 && t->total > (size_t)t->max_output) return UNDECIDED;
    return OK;
}

static int id_rejection(char *reason, size_t size, const char *field, size_t len, size_t want) {
    if (len && len != want) {
        snprintf(reason, size, "%s must be %zu bytes, got %zu", field, want, len);
        return 1;
    }
    return 0;
}

static int long_rejection(char *reason, size_t size, const char *field, uint64_t v) {
    if (v > (uint64_t)INT64_MAX) {
        snprintf(reason, size, "%s %llu is above 2^63-1", field, (unsigned long long)v);
        return 1;
    }
    return 0;
}

static int depth_rejection(char *reason, size_t size, const uint8_t *p, size_t n, uint32_t field) {
    if (pairs_too_deep(p, n, field)) {
        snprintf(reason, size, "%s", TOO_DEEP_REASON);
        return 1;
    }
    return 0;
}

/* Walks every resource and scope of a request; ``record`` is called for each item. */
typedef int (*ItemFn)(Table *t, const uint8_t *item, size_t len, Col *context, Context *x, int64_t *index);

static int walk_request(Table *t, const MsgSpec *spec, const uint8_t *body, size_t size, int context_column,
                        ItemFn item_fn) {
    int status = check_message(spec, body, size, 0);
    if (status) return status;
    Context x;
    memset(&x, 0, sizeof x);
    int64_t index = 0;
    Col *context = &t->root.children[context_column];
    Iter resources = iter_of(body, size, 1);
    const uint8_t *rl, *sl, *item;
    size_t rl_len, sl_len, item_len;
    while (!status && iter_next(&resources, &rl, &rl_len)) {
        const uint8_t *res;
        size_t res_len;
        last_bytes(rl, rl_len, 1, &res, &res_len);
        last_bytes(rl, rl_len, 3, &x.rurl, &x.rurl_len);
        if ((status = resource_read(&x.rv, res, res_len))) break;
        Iter scopes = iter_of(rl, rl_len, 2);
        while (!status && iter_next(&scopes, &sl, &sl_len)) {
            const uint8_t *scope;
            size_t scope_len;
            last_bytes(sl, sl_len, 1, &scope, &scope_len);
            last_bytes(sl, sl_len, 3, &x.surl, &x.surl_len);
            if ((status = scope_read(&x.sv, scope, scope_len))) break;
            x.first_row = -1;
            Iter items = iter_of(sl, sl_len, 2);
            while (!status && iter_next(&items, &item, &item_len))
                status = item_fn(t, item, item_len, context, &x, &index);
        }
    }
    entries_free(&x.rv.attributes);
    entries_free(&x.sv.attributes);
    return status;
}

/* ------------------------------------------------------------------------------------ */
/* The spans table (flatten.traces._span_row).                                            */

static const char LAYOUT_SPANS[] = "{ssssissllMi[{lsMi}]i[{sssMii}]i{ss}{Mi}s{ssMi}s}";
enum { SP_CONTEXT = 16 };
static char KIND_NAMES[8][40], STATUS_NAMES[8][40], TEMPORALITY_NAMES[8][40];

/* Every scalar and the last length-delimited value of fields 1..16 of a checked message, in
 * one pass (the last occurrence wins, as in protobuf); repeated fields are iterated apart. */
#define SCAN_FIELDS 17
typedef struct {
    const uint8_t *p[SCAN_FIELDS];
    size_t n[SCAN_FIELDS];
    uint64_t v[SCAN_FIELDS];
    uint32_t position[SCAN_FIELDS]; /* where the last occurrence was (for oneofs) */
    uint32_t seen;
} Fields;

static void scan_fields(const uint8_t *p, size_t n, Fields *f) {
    f->seen = 0;
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    uint32_t position = 0;
    while (r.p < r.end) {
        uint32_t field, v32;
        int wt;
        rd_tag(&r, &field, &wt);
        if (field >= SCAN_FIELDS) {
            rd_skip(&r, wt);
            continue;
        }
        switch (wt) {
            case 0: rd_varint(&r, &f->v[field]); break;
            case 1: rd_fixed64(&r, &f->v[field]); break;
            case 5:
                rd_fixed32(&r, &v32);
                f->v[field] = v32;
                break;
            case 2: rd_bytes(&r, &f->p[field], &f->n[field]); break;
            default: rd_skip(&r, wt); continue;
        }
        f->seen |= 1u << field;
        f->position[field] = ++position;
    }
}

static inline int f_has(const Fields *f, uint32_t k) { return (f->seen >> k) & 1; }
static inline uint64_t f_v(const Fields *f, uint32_t k) { return f_has(f, k) ? f->v[k] : 0; }
static inline const uint8_t *f_p(const Fields *f, uint32_t k) { return f_has(f, k) ? f->p[k] : NULL; }
static inline size_t f_n(const Fields *f, uint32_t k) { return f_has(f, k) ? f->n[k] : 0; }

/* _number(): the last of as_double / as_int, as a double, or NULL. */
static int col_number_of(Col *c, const Fields *f, uint32_t double_field, uint32_t int_field) {
    int d = f_has(f, double_field), i = f_has(f, int_field);
    if (d && (!i || f->position[double_field] > f->position[int_field])) return col_f64(c, as_double(f->v[double_field]));
    if (i) return col_f64(c, (double)(int64_t)f->v[int_field]);
    return col_f64_or_null(c, 0, 0);
}

static int span_rejection(const Fields *f, const uint8_t *p, size_t n, char *reason, size_t size) {
    if (id_rejection(reason, size, "trace_id", f_n(f, 1), 16)) return 1;
    if (id_rejection(reason, size, "span_id", f_n(f, 2), 8)) return 1;
    if (id_rejection(reason, size, "parent_span_id", f_n(f, 4), 8)) return 1;
    if (long_rejection(reason, size, "start_time_unix_nano", f_v(f, 7))) return 1;
    if (long_rejection(reason, size, "end_time_unix_nano", f_v(f, 8))) return 1;
    if (depth_rejection(reason, size, p, n, 9)) return 1;
    Iter events = iter_of(p, n, 11);
    const uint8_t *e, *q;
    size_t elen, len;
    while (iter_next(&events, &e, &elen)) {
        if (long_rejection(reason, size, "event time_unix_nano", last_fixed64(e, elen, 1, NULL))) return 1;
        if (depth_rejection(reason, size, e, elen, 3)) return 1;
    }
    Iter links = iter_of(p, n, 13);
    while (iter_next(&links, &e, &elen)) {
        last_bytes(e, elen, 1, &q, &len);
        if (id_rejection(reason, size, "link trace_id", len, 16)) return 1;
        last_bytes(e, elen, 2, &q, &len);
        if (id_rejection(reason, size, "link span_id", len, 8)) return 1;
        if (depth_rejection(reason, size, e, elen, 4)) return 1;
    }
    return 0;
}

static int span_item(Table *t, const uint8_t *p, size_t n, Col *context, Context *x, int64_t *index) {
    char reason[160];
    ++*index;
    if (x->rv.too_deep || x->sv.too_deep) {
        table_reject(t, *index, TOO_DEEP_REASON);
        return OK;
    }
    Fields f, g;
    scan_fields(p, n, &f);
    if (span_rejection(&f, p, n, reason, sizeof reason)) {
        table_reject(t, *index, reason);
        return OK;
    }
    Col *c = t->root.children;
    int s;
#define TRY(call) \
    if ((s = (call))) return s
    TRY(col_hex(&c[0], f_p(&f, 1), f_n(&f, 1)));
    TRY(col_hex(&c[1], f_p(&f, 2), f_n(&f, 2)));
    TRY(col_text(&c[2], f_p(&f, 3), f_n(&f, 3)));
    TRY(col_hex(&c[3], f_p(&f, 4), f_n(&f, 4)));
    TRY(col_i32(&c[4], (uint32_t)f_v(&f, 16)));
    TRY(col_text(&c[5], f_p(&f, 5), f_n(&f, 5)));
    TRY(col_enum(&c[6], KIND_NAMES, 8, (int32_t)f_v(&f, 6)));
    TRY(col_i64(&c[7], (int64_t)f_v(&f, 7)));
    TRY(col_i64(&c[8], (int64_t)f_v(&f, 8)));
    TRY(col_attributes(&c[9], &t->scratch, p, n, 9));
    TRY(col_i32(&c[10], (uint32_t)f_v(&f, 10)));
    Col *event = &c[11].children[0];
    Iter events = iter_of(p, n, 11);
    const uint8_t *e;
    size_t elen;
    while (iter_next(&events, &e, &elen)) {
        scan_fields(e, elen, &g);
        TRY(col_i64(&event->children[0], (int64_t)f_v(&g, 1)));
        TRY(col_text(&event->children[1], f_p(&g, 2), f_n(&g, 2)));
        TRY(col_attributes(&event->children[2], &t->scratch, e, elen, 3));
        TRY(col_i32(&event->children[3], (uint32_t)f_v(&g, 4)));
        TRY(col_slot(event, 1));
    }
    TRY(col_end_var(&c[11], 1));
    TRY(col_i32(&c[12], (uint32_t)f_v(&f, 12)));
    Col *link = &c[13].children[0];
    Iter links = iter_of(p, n, 13);
    while (iter_next(&links, &e, &elen)) {
        scan_fields(e, elen, &g);
        TRY(col_hex(&link->children[0], f_p(&g, 1), f_n(&g, 1)));
        TRY(col_hex(&link->children[1], f_p(&g, 2), f_n(&g, 2)));
        TRY(col_text(&link->children[2], f_p(&g, 3), f_n(&g, 3)));
        TRY(col_attributes(&link->children[3], &t->scratch, e, elen, 4));
        TRY(col_i32(&link->children[4], (uint32_t)f_v(&g, 5)));
        TRY(col_i32(&link->children[5], (uint32_t)f_v(&g, 6)));
        TRY(col_slot(link, 1));
    }
    TRY(col_end_var(&c[13], 1));
    TRY(col_i32(&c[14], (uint32_t)f_v(&f, 14)));
    scan_fields(f_p(&f, 15), f_n(&f, 15), &g); /* the status */
    TRY(col_text(&c[15].children[0], f_p(&g, 2), f_n(&g, 2)));
    TRY(col_enum(&c[15].children[1], STATUS_NAMES, 8, (int32_t)f_v(&g, 3)));
    TRY(col_slot(&c[15], 1));
    TRY(context_row(context, x));
    return table_row_done(t);
}

static int decode_traces_body(Table *t, const uint8_t *body, size_t size) {
    return walk_request(t, &TRACES_REQUEST, body, size, SP_CONTEXT, span_item);
}

/* ------------------------------------------------------------------------------------ */
/* The logs table (flatten.logs._log_row).                                                */

static const char LAYOUT_LOGS[] = "{sssllsssMii{Mi}s{ssMi}s}";
enum { LG_CONTEXT = 11 };
static char SEVERITY_NAMES[32][40]; /* set by configure(); "" where the enum has no name */

/* Checks in the order flatten.logs._log_row computes the values: the first failure is the reason. */
static int log_rejection(const Fields *f, int attributes_too_deep, char *reason, size_t size) {
    if (id_rejection(reason, size, "trace_id", f_n(f, 9), 16)) return 1;
    if (id_rejection(reason, size, "span_id", f_n(f, 10), 8)) return 1;
    if (long_rejection(reason, size, "time_unix_nano", f_v(f, 1))) return 1;
    if (long_rejection(reason, size, "observed_time_unix_nano", f_v(f, 11))) return 1;
    if (value_too_deep(f_p(f, 5), f_n(f, 5)) || attributes_too_deep) {
        snprintf(reason, size, "%s", TOO_DEEP_REASON);
        return 1;
    }
    return 0;
}

static int log_item(Table *t, const uint8_t *p, size_t n, Col *context, Context *x, int64_t *index) {
    char reason[160];
    ++*index;
    if (x->rv.too_deep || x->sv.too_deep) {
        table_reject(t, *index, TOO_DEEP_REASON);
        return OK;
    }
    Fields f;
    scan_fields(p, n, &f);
    int s = read_pairs(p, n, 6, &t->scratch, 1);
    if (s) return s;
    if (log_rejection(&f, t->scratch.too_deep, reason, sizeof reason)) {
        table_reject(t, *index, reason);
        return OK;
    }
    Col *c = t->root.children;
    int is_null;
    TRY(col_text(&c[0], f_p(&f, 12), f_n(&f, 12)));
    TRY(col_hex(&c[1], f_p(&f, 9), f_n(&f, 9)));
    TRY(col_hex(&c[2], f_p(&f, 10), f_n(&f, 10)));
    TRY(col_i64(&c[3], (int64_t)f_v(&f, 1)));
    TRY(col_i64(&c[4], (int64_t)f_v(&f, 11)));
    TRY(col_enum(&c[5], SEVERITY_NAMES, 32, (int32_t)f_v(&f, 2)));
    TRY(col_text(&c[6], f_p(&f, 3), f_n(&f, 3)));
    if (put_text(&c[7].data, f_p(&f, 5), f_n(&f, 5), &is_null)) return NOMEM;
    TRY(col_end_var(&c[7], !is_null));
    TRY(col_pairs(&c[8], &t->scratch));
    TRY(col_i32(&c[9], (uint32_t)f_v(&f, 7)));
    TRY(col_i32(&c[10], (uint32_t)f_v(&f, 8)));
    TRY(context_row(context, x));
    return table_row_done(t);
}

static int decode_logs_body(Table *t, const uint8_t *body, size_t size) {
    return walk_request(t, &LOGS_REQUEST, body, size, LG_CONTEXT, log_item);
}

/* ------------------------------------------------------------------------------------ */
/* The metrics table (flatten.metrics): one row per data point.                           */

#define EXEMPLARS "[{ldssM}]"
static const char LAYOUT_METRICS[] = "{ssss"
                                     "{lld" EXEMPLARS "Mi}"                       /* gauge */
                                     "{lld" EXEMPLARS "Misb}"                     /* sum */
                                     "{llld[l][d]" EXEMPLARS "Midds}"             /* histogram */
                                     "{Mllldil{i[l]}{i[l]}i" EXEMPLARS "ddds}"    /* exponential_histogram */
                                     "{llld[{dd}]Mi}"                             /* summary */
                                     "M{Mi}s{ssMi}s}";
enum { MT_GAUGE = 4, MT_METADATA = 9, MT_CONTEXT = 10 };
static const char *const METRIC_TYPES[] = {"gauge", "sum", "histogram", "exponential_histogram", "summary"};
static const uint32_t METRIC_FIELDS_OF_TYPE[] = {5, 7, 9, 10, 11};

static int exemplars_rejection(const uint8_t *p, size_t n, uint32_t field, char *reason, size_t size) {
    Iter it = iter_of(p, n, field);
    const uint8_t *e;
    size_t elen;
    Fields g;
    while (iter_next(&it, &e, &elen)) {
        scan_fields(e, elen, &g);
        if (long_rejection(reason, size, "exemplar time_unix_nano", f_v(&g, 2))) return 1;
        if (id_rejection(reason, size, "exemplar span_id", f_n(&g, 4), 8)) return 1;
        if (id_rejection(reason, size, "exemplar trace_id", f_n(&g, 5), 16)) return 1;
        if (depth_rejection(reason, size, e, elen, 7)) return 1;
    }
    return 0;
}

static int col_exemplars(Table *t, Col *list, const uint8_t *p, size_t n, uint32_t field) {
    Col *x = &list->children[0];
    Iter it = iter_of(p, n, field);
    const uint8_t *e;
    size_t elen;
    Fields g;
    int s;
    while (iter_next(&it, &e, &elen)) {
        scan_fields(e, elen, &g);
        TRY(col_i64(&x->children[0], (int64_t)f_v(&g, 2)));
        TRY(col_number_of(&x->children[1], &g, 3, 6));
        TRY(col_hex(&x->children[2], f_p(&g, 4), f_n(&g, 4)));
        TRY(col_hex(&x->children[3], f_p(&g, 5), f_n(&g, 5)));
        TRY(col_attributes(&x->children[4], &t->scratch, e, elen, 7));
        TRY(col_slot(x, 1));
    }
    return col_end_var(list, 1);
}

/* Checks in the order each flatten.metrics builder computes its dict. */
static int point_rejection(int kind, const Fields *f, const uint8_t *p, size_t n, char *reason, size_t z) {
    if (kind == 3 && depth_rejection(reason, z, p, n, 1)) return 1; /* exponential: attributes first */
    if (long_rejection(reason, z, "start_time_unix_nano", f_v(f, 2))) return 1;
    if (long_rejection(reason, z, "time_unix_nano", f_v(f, 3))) return 1;
    switch (kind) {
        case 0:
        case 1:
            if (exemplars_rejection(p, n, 5, reason, z)) return 1;
            return depth_rejection(reason, z, p, n, 7);
        case 2:
            if (long_rejection(reason, z, "count", f_v(f, 4))) return 1;
            if (longs_above(p, n, 6, 0)) {
                snprintf(reason, z, "a value of bucket_counts is above 2^63-1");
                return 1;
            }
            if (exemplars_rejection(p, n, 8, reason, z)) return 1;
            return depth_rejection(reason, z, p, n, 9);
        case 3:
            if (long_rejection(reason, z, "count", f_v(f, 4))) return 1;
            if (long_rejection(reason, z, "zero_count", f_v(f, 7))) return 1;
            if (longs_above(f_p(f, 8), f_n(f, 8), 2, 1)) {
                snprintf(reason, z, "a value of positive bucket_counts is above 2^63-1");
                return 1;
            }
            if (longs_above(f_p(f, 9), f_n(f, 9), 2, 1)) {
                snprintf(reason, z, "a value of negative bucket_counts is above 2^63-1");
                return 1;
            }
            return exemplars_rejection(p, n, 11, reason, z);
        default:
            if (long_rejection(reason, z, "count", f_v(f, 4))) return 1;
            return depth_rejection(reason, z, p, n, 7);
    }
}

static int col_optional_double(Col *c, const Fields *f, uint32_t k) {
    return col_f64_or_null(c, f_has(f, k), as_double(f_v(f, k)));
}

static int col_buckets(Col *c, const uint8_t *b, size_t blen) {
    int s;
    TRY(col_fixed(&c->children[0], &(int32_t){zigzag32(last_varint(b, blen, 1))}, 4, 1));
    TRY(col_longs(&c->children[1], b, blen, 2, 1));
    return col_slot(c, 1);
}

/* The struct of a point's own column (flatten.metrics._gauge ... _summary). */
static int point_struct(Table *t, int kind, Col *c, const Fields *f, const uint8_t *p, size_t n,
                        const Fields *data) {
    Col *x = c->children;
    int s;
    int32_t temporality = (int32_t)f_v(data, 2);
    switch (kind) {
        case 0:
        case 1:
            TRY(col_i64(&x[0], (int64_t)f_v(f, 2)));
            TRY(col_i64(&x[1], (int64_t)f_v(f, 3)));
            TRY(col_number_of(&x[2], f, 4, 6));
            TRY(col_exemplars(t, &x[3], p, n, 5));
            TRY(col_attributes(&x[4], &t->scratch, p, n, 7));
            TRY(col_i32(&x[5], (uint32_t)f_v(f, 8)));
            if (kind == 1) {
                TRY(col_enum(&x[6], TEMPORALITY_NAMES, 8, temporality));
                TRY(col_bool(&x[7], f_v(data, 3) != 0));
            }
            break;
        case 2: {
            TRY(col_i64(&x[0], (int64_t)f_v(f, 2)));
            TRY(col_i64(&x[1], (int64_t)f_v(f, 3)));
            TRY(col_i64(&x[2], (int64_t)f_v(f, 4)));
            TRY(col_optional_double(&x[3], f, 5));
            TRY(col_longs(&x[4], p, n, 6, 0));
            RepIter bounds = rep_of(p, n, 7, 0);
            uint64_t bits;
            while (rep_next(&bounds, &bits)) TRY(col_f64(&x[5].children[0], as_double(bits)));
            TRY(col_end_var(&x[5], 1));
            TRY(col_exemplars(t, &x[6], p, n, 8));
            TRY(col_attributes(&x[7], &t->scratch, p, n, 9));
            TRY(col_i32(&x[8], (uint32_t)f_v(f, 10)));
            TRY(col_optional_double(&x[9], f, 11));
            TRY(col_optional_double(&x[10], f, 12));
            TRY(col_enum(&x[11], TEMPORALITY_NAMES, 8, temporality));
            break;
        }
        case 3:
            TRY(col_attributes(&x[0], &t->scratch, p, n, 1));
            TRY(col_i64(&x[1], (int64_t)f_v(f, 2)));
            TRY(col_i64(&x[2], (int64_t)f_v(f, 3)));
            TRY(col_i64(&x[3], (int64_t)f_v(f, 4)));
            TRY(col_optional_double(&x[4], f, 5));
            TRY(col_fixed(&x[5], &(int32_t){zigzag32(f_v(f, 6))}, 4, 1));
            TRY(col_i64(&x[6], (int64_t)f_v(f, 7)));
            TRY(col_buckets(&x[7], f_p(f, 8), f_n(f, 8)));
            TRY(col_buckets(&x[8], f_p(f, 9), f_n(f, 9)));
            TRY(col_i32(&x[9], (uint32_t)f_v(f, 10)));
            TRY(col_exemplars(t, &x[10], p, n, 11));
            TRY(col_optional_double(&x[11], f, 12));
            TRY(col_optional_double(&x[12], f, 13));
            TRY(col_f64(&x[13], as_double(f_v(f, 14))));
            TRY(col_enum(&x[14], TEMPORALITY_NAMES, 8, temporality));
            break;
        default: {
            TRY(col_i64(&x[0], (int64_t)f_v(f, 2)));
            TRY(col_i64(&x[1], (int64_t)f_v(f, 3)));
            TRY(col_i64(&x[2], (int64_t)f_v(f, 4)));
            TRY(col_f64(&x[3], as_double(f_v(f, 5))));
            Col *q = &x[4].children[0];
            Iter quantiles = iter_of(p, n, 6);
            const uint8_t *v;
            size_t vlen;
            Fields g;
            while (iter_next(&quantiles, &v, &vlen)) {
                scan_fields(v, vlen, &g);
                TRY(col_f64(&q->children[0], as_double(f_v(&g, 1))));
                TRY(col_f64(&q->children[1], as_double(f_v(&g, 2))));
                TRY(col_slot(q, 1));
            }
            TRY(col_end_var(&x[4], 1));
            TRY(col_attributes(&x[5], &t->scratch, p, n, 7));
            TRY(col_i32(&x[6], (uint32_t)f_v(f, 8)));
        }
    }
    return col_slot(c, 1);
}

static int metric_item(Table *t, const uint8_t *m, size_t mlen, Col *context, Context *x, int64_t *index) {
    Fields mf, data, f;
    scan_fields(m, mlen, &mf);
    /* The data oneof: the last of its fields on the wire (each is there at most once). */
    int kind = -1;
    for (int k = 0; k < 5; k++) {
        uint32_t field = METRIC_FIELDS_OF_TYPE[k];
        if (f_has(&mf, field) && (kind < 0 || mf.position[field] > mf.position[METRIC_FIELDS_OF_TYPE[kind]]))
            kind = k;
    }
    if (kind < 0) return OK;
    const uint8_t *points_p = f_p(&mf, METRIC_FIELDS_OF_TYPE[kind]);
    size_t points_n = f_n(&mf, METRIC_FIELDS_OF_TYPE[kind]);
    scan_fields(points_p, points_n, &data);
    int metadata_deep = pairs_too_deep(m, mlen, 12);
    Col *c = t->root.children;
    Iter points = iter_of(points_p, points_n, 1);
    const uint8_t *p;
    size_t n;
    int s;
    while (iter_next(&points, &p, &n)) {
        char reason[160];
        ++*index;
        if (x->rv.too_deep || x->sv.too_deep || metadata_deep) {
            table_reject(t, *index, TOO_DEEP_REASON);
            continue;
        }
        scan_fields(p, n, &f);
        if (point_rejection(kind, &f, p, n, reason, sizeof reason)) {
            table_reject(t, *index, reason);
            continue;
        }
        TRY(col_text(&c[0], f_p(&mf, 1), f_n(&mf, 1)));
        TRY(col_text(&c[1], f_p(&mf, 2), f_n(&mf, 2)));
        TRY(col_text(&c[2], f_p(&mf, 3), f_n(&mf, 3)));
        TRY(col_str(&c[3], (const uint8_t *)METRIC_TYPES[kind], strlen(METRIC_TYPES[kind])));
        for (int k = 0; k < 5; k++)
            TRY(k == kind ? point_struct(t, kind, &c[MT_GAUGE + k], &f, p, n, &data) : col_null(&c[MT_GAUGE + k]));
        TRY(col_attributes(&c[MT_METADATA], &t->scratch, m, mlen, 12));
        TRY(context_row(context, x));
        TRY(table_row_done(t));
    }
    return OK;
}
#undef TRY

static int decode_metrics_body(Table *t, const uint8_t *body, size_t size) {
    return walk_request(t, &METRICS_REQUEST, body, size, MT_CONTEXT, metric_item);
}

#ifdef OTEL_NATIVE_FUZZ
/* libFuzzer entry (fuzz/run.py builds it with AddressSanitizer and UndefinedBehaviorSanitizer). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* OTEL_FUZZ_SIGNAL (logs, traces or metrics; fuzz/run.py sets it) picks the decoder. */
    static int configured = 0, signal = 0;
    if (!configured) {
        strcpy(SEVERITY_NAMES[0], "SEVERITY_NUMBER_UNSPECIFIED");
        strcpy(SEVERITY_NAMES[9], "SEVERITY_NUMBER_INFO");
        strcpy(KIND_NAMES[1], "SPAN_KIND_INTERNAL");
        strcpy(STATUS_NAMES[2], "STATUS_CODE_ERROR");
        strcpy(TEMPORALITY_NAMES[2], "AGGREGATION_TEMPORALITY_CUMULATIVE");
        const char *name = getenv("OTEL_FUZZ_SIGNAL");
        signal = name && !strcmp(name, "traces") ? 1 : name && !strcmp(name, "metrics") ? 2 : 0;
        configured = 1;
    }
    if (signal) {
        Table *t = table_new(signal == 1 ? LAYOUT_SPANS : LAYOUT_METRICS, signal == 1 ? "span" : "data point", 64 << 20);
        if (!t) return 0;
        if (signal == 1)
            decode_traces_body(t, data, size);
        else
            decode_metrics_body(t, data, size);
        table_free(t);
        return 0;
    }
    Table *t = table_new(LAYOUT_LOGS, "log record", 64 << 20);
    if (!t) return 0;
    decode_logs_body(t, data, size);
    table_free(t);
    return 0;
}
#else

/* ------------------------------------------------------------------------------------ */
/* Python: handing the buffers over.                                                     */

/* The Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html): the
 * batch is one struct array whose children point into the builders' buffers, which the
 * release callback frees once Arrow is done with them. No copy. */
struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

/* The generic tables (spans, metrics) exported the same way, node by node from the tree. */
typedef struct {
    Table *t;
    struct ArrowArray *nodes;
    const void **buffers;
    struct ArrowArray **children;
    int nodes_used, buffers_used, children_used;
} TableExport;

static int col_nodes(const Col *c) {
    int count = c->type == T_MAP ? 2 : 1; /* a map has its entries struct */
    for (int i = 0; i < c->nchildren; i++) count += col_nodes(&c->children[i]);
    return count;
}

static void child_release(struct ArrowArray *array) { array->release = NULL; }

static const void *data_of(Buf *b) { return buf_reserve(b, 1) ? NULL : b->p; }

static void table_export_release(struct ArrowArray *array) {
    TableExport *e = array->private_data;
    table_free(e->t);
    free(e->nodes);
    free(e->buffers);
    free(e->children);
    free(e);
    array->release = NULL;
}

static struct ArrowArray *tnode(TableExport *e, int64_t length, int64_t nulls, int n_buffers, int n_children) {
    struct ArrowArray *a = &e->nodes[e->nodes_used++];
    memset(a, 0, sizeof *a);
    a->length = length;
    a->null_count = nulls;
    a->n_buffers = n_buffers;
    a->n_children = n_children;
    a->buffers = &e->buffers[e->buffers_used];
    e->buffers_used += n_buffers;
    for (int i = 0; i < n_buffers; i++) a->buffers[i] = NULL;
    a->children = n_children ? &e->children[e->children_used] : NULL;
    e->children_used += n_children;
    a->release = child_release;
    return a;
}

/* NULL when out of memory. */
static struct ArrowArray *export_col(TableExport *e, Col *c) {
    int buffers = c->type == T_STR ? 3 : c->type == T_STRUCT ? 1 : 2;
    int children = c->type == T_MAP ? 1 : c->nchildren;
    struct ArrowArray *a = tnode(e, c->n, c->nulls, buffers, children);
    if (c->nulls) {
        size_t need = (size_t)(c->n + 7) / 8;
        if (c->validity.len < need) {
            size_t old = c->validity.len;
            if (buf_reserve(&c->validity, need - old)) return NULL;
            memset(c->validity.p + old, 0, need - old);
            c->validity.len = need;
        }
        if (!(a->buffers[0] = data_of(&c->validity))) return NULL;
    }
    switch (c->type) {
        case T_STR:
            if (!(a->buffers[1] = data_of(&c->offsets)) || !(a->buffers[2] = data_of(&c->data))) return NULL;
            return a;
        case T_LIST:
            if (!(a->buffers[1] = data_of(&c->offsets))) return NULL;
            return (a->children[0] = export_col(e, &c->children[0])) ? a : NULL;
        case T_MAP: {
            if (!(a->buffers[1] = data_of(&c->offsets))) return NULL;
            struct ArrowArray *entries = tnode(e, c->children[0].n, 0, 1, 2);
            a->children[0] = entries;
            for (int i = 0; i < 2; i++)
                if (!(entries->children[i] = export_col(e, &c->children[i]))) return NULL;
            return a;
        }
        case T_STRUCT:
            for (int i = 0; i < c->nchildren; i++)
                if (!(a->children[i] = export_col(e, &c->children[i]))) return NULL;
            return a;
        default: /* fixed width and bool */
            return (a->buffers[1] = data_of(&c->data)) ? a : NULL;
    }
}

/* The Python result of a generic table: (rows, rejected, first_error, address, bytes); takes t. */
static PyObject *table_result(Table *t, int status) {
    if (status == NOMEM) {
        table_free(t);
        return PyErr_NoMemory();
    }
    if (status != OK) {
        table_free(t);
        Py_RETURN_NONE;
    }
    int nodes = col_nodes(&t->root);
    TableExport *e = calloc(1, sizeof *e);
    struct ArrowArray *batch = NULL;
    if (e) {
        e->t = t;
        e->nodes = calloc((size_t)nodes, sizeof *e->nodes);
        e->buffers = calloc((size_t)nodes * 3, sizeof *e->buffers);
        e->children = calloc((size_t)nodes, sizeof *e->children);
        if (e->nodes && e->buffers && e->children) batch = export_col(e, &t->root);
    }
    if (!batch) {
        if (e) {
            free(e->nodes);
            free(e->buffers);
            free(e->children);
            free(e);
        }
        table_free(t);
        return PyErr_NoMemory();
    }
    batch->release = table_export_release;
    batch->private_data = e;
    PyObject *first = t->rejected ? PyUnicode_FromString(t->first_error) : (Py_INCREF(Py_None), Py_None);
    return Py_BuildValue("(LLNNL)", (long long)t->rows, (long long)t->rejected, first, PyLong_FromVoidPtr(batch),
                         (long long)col_bytes(&t->root));
}

static PyObject *decode_table(PyObject *args, const char *layout, const char *noun,
                              int (*decode_body)(Table *, const uint8_t *, size_t)) {
    Py_buffer body;
    long long max_output;
    if (!PyArg_ParseTuple(args, "y*L", &body, &max_output)) return NULL;
    Table *t = table_new(layout, noun, max_output);
    if (!t) {
        PyBuffer_Release(&body);
        return PyErr_NoMemory();
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = decode_body(t, (const uint8_t *)body.buf, (size_t)body.len);
    Py_END_ALLOW_THREADS PyBuffer_Release(&body);
    return table_result(t, status);
}

static PyObject *py_decode_logs(PyObject *self, PyObject *args) {
    return decode_table(args, LAYOUT_LOGS, "log record", decode_logs_body);
}

static PyObject *py_decode_traces(PyObject *self, PyObject *args) {
    return decode_table(args, LAYOUT_SPANS, "span", decode_traces_body);
}

static PyObject *py_decode_metrics(PyObject *self, PyObject *args) {
    return decode_table(args, LAYOUT_METRICS, "data point", decode_metrics_body);
}

/* Fills ``names`` (``count`` slots) from a dict of enum number → name. */
static int enum_table(PyObject *dict, char names[][40], int count) {
    memset(names, 0, (size_t)count * sizeof *names);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        long number = PyLong_AsLong(key);
        if (number == -1 && PyErr_Occurred()) return -1;
        const char *name = PyUnicode_AsUTF8(value);
        if (!name) return -1;
        if (number < 0 || number >= count || strlen(name) >= sizeof names[0]) {
            PyErr_SetString(PyExc_ValueError, "enum number or name out of range");
            return -1;
        }
        strcpy(names[number], name);
    }
    return 0;
}

static PyObject *py_configure(PyObject *self, PyObject *args) {
    PyObject *severities, *kinds, *codes, *temporalities;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyDict_Type, &severities, &PyDict_Type, &kinds, &PyDict_Type, &codes,
                          &PyDict_Type, &temporalities))
        return NULL;
    if (enum_table(severities, SEVERITY_NAMES, 32) || enum_table(kinds, KIND_NAMES, 8) ||
        enum_table(codes, STATUS_NAMES, 8) || enum_table(temporalities, TEMPORALITY_NAMES, 8))
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_known_fields(PyObject *self, PyObject *unused) {
    PyObject *result = PyDict_New();
    if (!result) return NULL;
    for (size_t i = 0; i < sizeof ALL_SPECS / sizeof *ALL_SPECS; i++) {
        const MsgSpec *spec = ALL_SPECS[i];
        PyObject *numbers = PyList_New(0);
        if (!numbers) goto fail;
        for (int k = 0; k < spec->nfields; k++) {
            PyObject *number = spec->fields[k].num ? PyLong_FromUnsignedLong(spec->fields[k].num) : NULL;
            if (spec->fields[k].num && (!number || PyList_Append(numbers, number))) {
                Py_XDECREF(number);
                Py_DECREF(numbers);
                goto fail;
            }
            Py_XDECREF(number);
        }
        if (PyDict_SetItemString(result, spec->name, numbers)) {
            Py_DECREF(numbers);
            goto fail;
        }
        Py_DECREF(numbers);
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"decode_logs", py_decode_logs, METH_VARARGS,
     "decode_logs(body, max_output_bytes) -> (rows, rejected, first_error, columns, bytes) or None (undecided)"},
    {"decode_traces", py_decode_traces, METH_VARARGS,
     "decode_traces(body, max_output_bytes) -> (rows, rejected, first_error, columns, bytes) or None (undecided)"},
    {"decode_metrics", py_decode_metrics, METH_VARARGS,
     "decode_metrics(body, max_output_bytes) -> (rows, rejected, first_error, columns, bytes) or None (undecided)"},
    {"configure", py_configure, METH_VARARGS,
     "configure(severities, span_kinds, status_codes, temporalities: dict[int, str])"},
    {"known_fields", py_known_fields, METH_NOARGS, "Field numbers each message shape knows, by message name."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_native", "The compiled OTLP decoder.", -1, METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&MODULE); }
#endif /* OTEL_NATIVE_FUZZ */
