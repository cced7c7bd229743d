/* fl_transpose.h: in-register transposes for the softmax tiles (fl_softmax_tmpl.h), where the
 * instruction set has them; FL_TRANSPOSE_16 is defined when fl_transpose_16 (float) and
 * fl_transpose_8 (double) exist. */
#ifndef FL_TRANSPOSE_H
#define FL_TRANSPOSE_H

#if defined(__AVX512F__)
#include <immintrin.h>
#define FL_TRANSPOSE_16

/* Rows [0, 16) of a (16, C) row-major float array, C <= 16, into columns [0, 16) of the
 * (C, lanes) tile: element (l, c) of src goes to tile[c*lanes + l]. Each row is one masked load
 * (the classes past C read as 0 and are never stored), then the classic four rounds of
 * shuffles, 64 in all: pairs of rows interleaved (ps), then pairs of pairs (pd), which leaves
 * column 4k + j of rows 4q..4q+3 in 128-bit lane k of r[4q + j]; two rounds of 128-bit lane
 * shuffles (0x88 takes lanes 0 and 2 of each source, 0xdd lanes 1 and 3) gather each column. */
static inline void fl_transpose_16(const float *restrict src, ptrdiff_t C, float *restrict tile,
                                   ptrdiff_t lanes) {
    const __mmask16 classes = (__mmask16)((1u << C) - 1);
    __m512 r[16], t[16], col[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_maskz_loadu_ps(classes, src + i * C);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#define FL_PD(v) _mm512_castps_pd(v)
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(FL_PD(t[i]), FL_PD(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(FL_PD(t[i]), FL_PD(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(FL_PD(t[i + 1]), FL_PD(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(FL_PD(t[i + 1]), FL_PD(t[i + 3])));
    }
#undef FL_PD
    for (int j = 0; j < 4; j++) {
        __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        __m512 u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
        __m512 v0 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
        col[j] = _mm512_shuffle_f32x4(u0, v0, 0x88);
        col[4 + j] = _mm512_shuffle_f32x4(u1, v1, 0x88);
        col[8 + j] = _mm512_shuffle_f32x4(u0, v0, 0xdd);
        col[12 + j] = _mm512_shuffle_f32x4(u1, v1, 0xdd);
    }
    for (ptrdiff_t c = 0; c < C; c++) _mm512_storeu_ps(tile + c * lanes, col[c]);
}

/* The same for doubles, 8 rows at a time, columns [c0, c0 + 8) (C - c0 of them if fewer) of
 * a (8, C) row-major array: pairs of rows interleaved, which leaves column 2k + j of rows 2q,
 * 2q + 1 in 128-bit lane k of t[2q + j], then the two rounds of lane shuffles. */
static inline void fl_transpose_8(const double *restrict src, ptrdiff_t C, ptrdiff_t c0,
                                  double *restrict tile, ptrdiff_t lanes) {
    const ptrdiff_t n = C - c0 < 8 ? C - c0 : 8;
    const __mmask8 classes = (__mmask8)((1u << n) - 1);
    __m512d r[8], t[8], col[8];
    for (int i = 0; i < 8; i++) r[i] = _mm512_maskz_loadu_pd(classes, src + i * C + c0);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int j = 0; j < 2; j++) {
        __m512d u0 = _mm512_shuffle_f64x2(t[j], t[2 + j], 0x88);
        __m512d u1 = _mm512_shuffle_f64x2(t[j], t[2 + j], 0xdd);
        __m512d v0 = _mm512_shuffle_f64x2(t[4 + j], t[6 + j], 0x88);
        __m512d v1 = _mm512_shuffle_f64x2(t[4 + j], t[6 + j], 0xdd);
        col[j] = _mm512_shuffle_f64x2(u0, v0, 0x88);
        col[2 + j] = _mm512_shuffle_f64x2(u1, v1, 0x88);
        col[4 + j] = _mm512_shuffle_f64x2(u0, v0, 0xdd);
        col[6 + j] = _mm512_shuffle_f64x2(u1, v1, 0xdd);
    }
    for (ptrdiff_t c = 0; c < n; c++) _mm512_storeu_pd(tile + (c0 + c) * lanes, col[c]);
}
#endif

#endif /* FL_TRANSPOSE_H */
