/* nrqc's hand-written Cortex-M (ARMv7E-M) kernels, written for nrqc (no third-party code).
 *
 * Included at the top of nrqc_kernels.c; the TIR kernels the Cortex-M back end substitutes
 * call these functions with constant shapes (tirx call_extern), and every function is
 * always_inline, so GCC specializes each call site (loop bounds, strides, block sizes).
 *
 * Packed maps: uint32 words, bit c % 32 of word c / 32 is channel c, NHWC; bits past the
 * channel count are 0 (and their weights are 0 as well, so they add nothing).
 */
#ifndef NRQC_DSP_H_
#define NRQC_DSP_H_
#include <stdint.h>
#include <string.h>
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define NRQC_HAVE_DSP 1
#endif

#define NRQC_INLINE static inline __attribute__((always_inline))

/* Population count without a libgcc call (M-profile has no popcount instruction):
 * SWAR sums of 2, 4, 8 bits, then a multiply adds the four byte counts (MUL is 1 cycle). */
NRQC_INLINE int32_t nrqc_popcount32(uint32_t x) {
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  x = (x + (x >> 4)) & 0x0F0F0F0Fu;
  return (int32_t)((x * 0x01010101u) >> 24);
}

/* ---------------------------------------------------------------------------------------
 * {0,1} input x int8 weights: nibble tables.
 *
 * A nibble (4 input channels of one tap) selects one of 16 precomputed sums of those 4
 * weights. Two output channels share a 32-bit table entry: entry = (512 + s_even) +
 * 65536 * (512 + s_odd), each lane in [0, 1020], so one plain ADD accumulates two channels
 * and up to 64 nibbles never carry from the low lane into the high one ("flush" below moves
 * the lanes into 32-bit accumulators before that). Per 4 input channels and 2*PB output
 * channels: one bit-field extract, one address add, PB loads, PB adds.
 *
 * Weights (wpair) are int8 pairs [Q][P][4][2]: (w[2p][c], w[2p+1][c]) for channel c = 4*c4 + k
 * of group q = (r*KW + s)*Q4 + c4; the table build makes the words w[2p][c] + 65536*w[2p+1][c]
 * (two's complement, exact mod 2^32).
 * Tables: [Q][16][TP] entries for TP pairs. In flash (ftable, TP = P, built at compile time)
 * or built per block of PB pairs in the workspace `table` (TP = PB).
 * ------------------------------------------------------------------------------------- */
#define NRQC_NIB_BIAS 512u
#define NRQC_NIB_BIAS2 (NRQC_NIB_BIAS | (NRQC_NIB_BIAS << 16))

#define NRQC_NIB_WORD(w, k) ((uint32_t)(int32_t)(w)[2 * (k)] + ((uint32_t)(int32_t)(w)[2 * (k) + 1] << 16))
NRQC_INLINE void nrqc_nib_build(uint32_t *t, const int8_t *wpair, int32_t Q, int32_t P, int32_t pb0, int32_t PB) {
  for (int32_t q = 0; q < Q; q++) {
    for (int32_t p = 0; p < PB; p++) {
      const int8_t *w = wpair + ((q * P) + pb0 + p) * 8;
      uint32_t *e = t + q * 16 * PB + p;
      uint32_t w0 = NRQC_NIB_WORD(w, 0), w1 = NRQC_NIB_WORD(w, 1), w2 = NRQC_NIB_WORD(w, 2), w3 = NRQC_NIB_WORD(w, 3);
      uint32_t e0 = NRQC_NIB_BIAS2, e1 = e0 + w0, e2 = e0 + w1, e3 = e2 + w0;
      uint32_t e4 = e0 + w2, e5 = e4 + w0, e6 = e4 + w1, e7 = e6 + w0;
      e[0 * PB] = e0; e[1 * PB] = e1; e[2 * PB] = e2; e[3 * PB] = e3;
      e[4 * PB] = e4; e[5 * PB] = e5; e[6 * PB] = e6; e[7 * PB] = e7;
      e[8 * PB] = e0 + w3; e[9 * PB] = e1 + w3; e[10 * PB] = e2 + w3; e[11 * PB] = e3 + w3;
      e[12 * PB] = e4 + w3; e[13 * PB] = e5 + w3; e[14 * PB] = e6 + w3; e[15 * PB] = e7 + w3;
    }
  }
}

/* The 8 nibbles of one input word (nk of them used): acc[p] += T_k[nibble k][p]. Tables
 * of consecutive nibbles are 16 * TP words apart. Left alone, GCC hoists the addresses of
 * all 8 nibbles and spills accumulators to the stack; with PB in {2, 4, 8} and TP a power of
 * two each nibble is one asm statement: UBFX, ADD (base + index << log2(entry bytes)), then
 * LDRD + 2 ADD per two pairs, the table offset in the LDRD immediate (one base pointer per
 * 1 KB of tables). 8 instructions per nibble for 8 output channels (4 pairs). */
#define NRQC_NIB_ASM1(OFF) "ldrd %[t0], %[t1], [%[i], #" #OFF "+%c[off]]\n\tadd %[a0], %[t0]\n\tadd %[a1], %[t1]\n\t"
NRQC_INLINE void nrqc_nib_word(uint32_t *acc, uint32_t word, const uint32_t *tj, int32_t TP, int32_t PB,
                               int32_t nk) {
#if defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_7M__)
  if ((PB == 2 || PB == 4 || PB == 8) && (TP & (TP - 1)) == 0 && TP >= PB) {
    const int32_t ent = 16 * TP * 4;                   /* bytes of one nibble's table */
    const int32_t per = ent <= 512 ? 1024 / ent / 2 * 2 : 1;  /* tables one LDRD base reaches */
#pragma GCC unroll 8
    for (int32_t k = 0; k < 8; k++) {
      if (k < nk) {
        const uint32_t *b = tj + (k / per) * per * 16 * TP;
        uint32_t i, t0, t1;
        if (PB == 2) {
          __asm__("ubfx %[i], %[w], %[sh], #4\n\tadd %[i], %[b], %[i], lsl %[ls]\n\t" NRQC_NIB_ASM1(0)
                  : [i] "=&r"(i), [t0] "=&r"(t0), [t1] "=&r"(t1), [a0] "+r"(acc[0]), [a1] "+r"(acc[1])
                  : [w] "r"(word), [b] "r"(b), [sh] "n"(4 * k), [ls] "n"(__builtin_ctz(TP * 4)),
                    [off] "n"((k % per) * ent) : "memory");
        } else {
#pragma GCC unroll 2
          for (int32_t h = 0; h < PB; h += 4) {
            if (h == 0)
              __asm__("ubfx %[i], %[w], %[sh], #4\n\tadd %[i], %[b], %[i], lsl %[ls]\n\t" : [i] "=&r"(i)
                      : [w] "r"(word), [b] "r"(b), [sh] "n"(4 * k), [ls] "n"(__builtin_ctz(TP * 4)));
            __asm__(NRQC_NIB_ASM1(0) "ldrd %[t0], %[t1], [%[i], #8+%c[off]]\n\tadd %[a2], %[t0]\n\tadd %[a3], %[t1]"
                    : [t0] "=&r"(t0), [t1] "=&r"(t1), [a0] "+r"(acc[h]), [a1] "+r"(acc[h + 1]),
                      [a2] "+r"(acc[h + 2]), [a3] "+r"(acc[h + 3])
                    : [i] "r"(i), [off] "n"((k % per) * ent + 4 * h) : "memory");
          }
        }
      }
    }
    return;
  }
#endif
#pragma GCC unroll 8
  for (int32_t k = 0; k < 8; k++) {
    if (k < nk) {
      const uint32_t *e = tj + (k * 16 + ((word >> (4 * k)) & 15u)) * TP;
#pragma GCC unroll 8
      for (int32_t p = 0; p < PB; p++) acc[p] += e[p];
    }
  }
}

/* Accumulators of one output pixel for PB pairs: v[2p] (even channel), v[2p+1] (odd).
 * PB is a constant at every call site (PB divides the pair count), so after inlining the
 * accumulators are registers and the nibble loop is fully unrolled. */
#define NRQC_NIB_MAX_PB 8
NRQC_INLINE void nrqc_nib_pixel(int32_t *v, const uint32_t *x, const uint32_t *t, int32_t TP, int32_t toff,
                                int32_t n, int32_t oy, int32_t ox, int32_t H, int32_t W, int32_t Wi, int32_t Q4,
                                int32_t KH, int32_t KW, int32_t SH, int32_t SW, int32_t PT, int32_t PL,
                                int32_t DH, int32_t DW, int32_t PB) {
  uint32_t acc[NRQC_NIB_MAX_PB];
  int32_t cnt = 0;
#pragma GCC unroll 8
  for (int32_t p = 0; p < PB; p++) { acc[p] = 0; v[2 * p] = 0; v[2 * p + 1] = 0; }
  for (int32_t r = 0; r < KH; r++) {
    int32_t ih = oy * SH - PT + r * DH;
    if (ih < 0 || ih >= H) continue;
    for (int32_t s = 0; s < KW; s++) {
      int32_t iw = ox * SW - PL + s * DW;
      if (iw < 0 || iw >= W) continue;
      const uint32_t *xp = x + ((n * H + ih) * W + iw) * Wi;
      const uint32_t *tq = t + (r * KW + s) * Q4 * 16 * TP + toff;
      for (int32_t j = 0; j * 8 < Q4; j++) {
        const int32_t nk = (Q4 - j * 8) < 8 ? (Q4 - j * 8) : 8;
        if (cnt + nk > 64) {  /* lanes would reach 65536: move them out */
#pragma GCC unroll 8
          for (int32_t p = 0; p < PB; p++) {
            v[2 * p] += (int32_t)(acc[p] & 0xFFFFu) - (int32_t)NRQC_NIB_BIAS * cnt;
            v[2 * p + 1] += (int32_t)(acc[p] >> 16) - (int32_t)NRQC_NIB_BIAS * cnt;
            acc[p] = 0;
          }
          cnt = 0;
        }
        nrqc_nib_word(acc, xp[j], tq + j * 8 * 16 * TP, TP, PB, nk);
        cnt += nk;
      }
    }
  }
#pragma GCC unroll 8
  for (int32_t p = 0; p < PB; p++) {
    v[2 * p] += (int32_t)(acc[p] & 0xFFFFu) - (int32_t)NRQC_NIB_BIAS * cnt;
    v[2 * p + 1] += (int32_t)(acc[p] >> 16) - (int32_t)NRQC_NIB_BIAS * cnt;
  }
}

/* The whole layer. out_float 0: Y uint32 [N, PHO, PWO, Wo32], bit o = (sigma[o] * v >= thr[o])
 * of the pool window's extreme (max where sigma >= 0, else min; the window PKH x PKW,
 * stride PSH/PSW, padding PPT/PPL; 1x1 windows = no pool). out_float 1: Y float32
 * [N, Co, HO, WO] = v * scale[o]. table_mem: Q * 16 * PB words of scratch (NULL with ftable).
 * in_flash: 1 = tables precomputed in ftable (wpair, table_mem unused), 0 = built from wpair.
 * PB (pairs per block) divides the pair count (Co + 1) / 2. */
NRQC_INLINE int32_t nrqc_b01_i8_conv(const uint32_t *x, const int8_t *wpair, const uint32_t *ftable,
                                     void *table_mem, const int32_t *sigma, const int32_t *thr,
                                     const float *scale, void *y, int32_t N, int32_t H, int32_t W, int32_t Wi,
                                     int32_t Co, int32_t KH, int32_t KW, int32_t SH, int32_t SW, int32_t PT,
                                     int32_t PL, int32_t DH, int32_t DW, int32_t HO, int32_t WO, int32_t Q4,
                                     int32_t PB, int32_t out_float, int32_t PKH, int32_t PKW, int32_t PSH,
                                     int32_t PSW, int32_t PPT, int32_t PPL, int32_t PHO, int32_t PWO,
                                     int32_t in_flash) {
  const int32_t P = (Co + 1) / 2, Q = KH * KW * Q4, Wo32 = (Co + 31) / 32;
  /* placement as a constant argument, not `ftable != NULL`: in the TIR wrapper the table
   * pointer is a run-time DLTensor field, and TP must be a constant at the call site (the
   * nibble asm takes its shift and offsets as immediates) */
  const int32_t TP = in_flash ? P : PB;
  uint32_t *table = (uint32_t *)table_mem;  /* a tensor of the static plan (any dtype) */
  int32_t v[2 * NRQC_NIB_MAX_PB], ext_hi[2 * NRQC_NIB_MAX_PB], ext_lo[2 * NRQC_NIB_MAX_PB];
  for (int32_t pb0 = 0; pb0 < P; pb0 += PB) {
    const uint32_t *t = ftable;
    int32_t toff = pb0;
    if (!in_flash) {
      nrqc_nib_build(table, wpair, Q, P, pb0, PB);
      t = table;
      toff = 0;
    }
    const int32_t o0 = 2 * pb0;
    for (int32_t n = 0; n < N; n++) {
      for (int32_t py = 0; py < PHO; py++) {
        for (int32_t px = 0; px < PWO; px++) {
          if (PKH * PKW == 1) {
            nrqc_nib_pixel(v, x, t, TP, toff, n, py, px, H, W, Wi, Q4, KH, KW, SH, SW, PT, PL, DH, DW, PB);
          } else {
            int32_t first = 1;
            for (int32_t a = 0; a < PKH; a++) {
              int32_t oy = py * PSH - PPT + a;
              if (oy < 0 || oy >= HO) continue;
              for (int32_t b = 0; b < PKW; b++) {
                int32_t ox = px * PSW - PPL + b;
                if (ox < 0 || ox >= WO) continue;
                nrqc_nib_pixel(v, x, t, TP, toff, n, oy, ox, H, W, Wi, Q4, KH, KW, SH, SW, PT, PL, DH, DW, PB);
#pragma GCC unroll 16
                for (int32_t i = 0; i < 2 * PB; i++) {
                  if (first || v[i] > ext_hi[i]) ext_hi[i] = v[i];
                  if (first || v[i] < ext_lo[i]) ext_lo[i] = v[i];
                }
                first = 0;
              }
            }
#pragma GCC unroll 16
            for (int32_t i = 0; i < 2 * PB; i++) v[i] = (o0 + i < Co && sigma[o0 + i] < 0) ? ext_lo[i] : ext_hi[i];
          }
          if (out_float) {
            float *yf = (float *)y;
#pragma GCC unroll 16
            for (int32_t i = 0; i < 2 * PB; i++)
              if (o0 + i < Co) yf[((n * Co + o0 + i) * HO + py) * WO + px] = (float)v[i] * scale[o0 + i];
          } else {
            uint32_t bits = 0;
#pragma GCC unroll 16
            for (int32_t i = 0; i < 2 * PB; i++)
              if (o0 + i < Co) bits |= (uint32_t)(sigma[o0 + i] * v[i] >= thr[o0 + i]) << ((o0 + i) & 31);
            uint32_t *yw = (uint32_t *)y + ((n * PHO + py) * PWO + px) * Wo32 + (o0 >> 5);
            if ((o0 & 31) == 0) *yw = bits; else *yw |= bits;
          }
        }
      }
    }
  }
  return 0;
}

/* The set-bit walk over one pixel's Wi packed words: each set bit c adds weight column c
 * (wbase[k * C + c], k < NACC <= 16) to 16 named float accumulators (GCC keeps an unrolled
 * array of 16 on the stack; the ones past NACC are dead code once NACC is a constant), then
 * declares `float NAME[16]` holding them. */
#define NRQC_BITWALK_ACC(NACC, k) if ((NACC) > k) a##k += wc_[k * (C_)]
#define NRQC_BITWALK16(NAME, XP, WBASE, WI, C, NACC)                                                 \
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;                              \
  float a8 = 0, a9 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0, a14 = 0, a15 = 0;                        \
  {                                                                                                  \
    const uint32_t *xp_ = (XP);                                                                      \
    const int32_t C_ = (C);                                                                          \
    for (int32_t j_ = 0; j_ < (WI); j_++) {                                                          \
      uint32_t m_ = xp_[j_];                                                                         \
      while (m_) {                                                                                   \
        const float *wc_ = (WBASE) + j_ * 32 + __builtin_ctz(m_);                                    \
        m_ &= m_ - 1u;                                                                               \
        NRQC_BITWALK_ACC(NACC, 0); NRQC_BITWALK_ACC(NACC, 1); NRQC_BITWALK_ACC(NACC, 2);             \
        NRQC_BITWALK_ACC(NACC, 3); NRQC_BITWALK_ACC(NACC, 4); NRQC_BITWALK_ACC(NACC, 5);             \
        NRQC_BITWALK_ACC(NACC, 6); NRQC_BITWALK_ACC(NACC, 7); NRQC_BITWALK_ACC(NACC, 8);             \
        NRQC_BITWALK_ACC(NACC, 9); NRQC_BITWALK_ACC(NACC, 10); NRQC_BITWALK_ACC(NACC, 11);           \
        NRQC_BITWALK_ACC(NACC, 12); NRQC_BITWALK_ACC(NACC, 13); NRQC_BITWALK_ACC(NACC, 14);          \
        NRQC_BITWALK_ACC(NACC, 15);                                                                  \
      }                                                                                              \
    }                                                                                                \
  }                                                                                                  \
  float NAME[16] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15}

/* Row sums of NACC weight rows (the {-1,+1} reading of bits: 2 * sum(set) - rowsum), or 0. */
NRQC_INLINE void nrqc_rowsums(float *rowsum, const float *w, int32_t C, int32_t NACC, int32_t signed_input) {
#pragma GCC unroll 16
  for (int32_t k = 0; k < NACC; k++) {
    float s = 0.0f;
    if (signed_input)
      for (int32_t c = 0; c < C; c++) s += w[k * C + c];
    rowsum[k] = s;
  }
}

/* ---------------------------------------------------------------------------------------
 * Full-precision 1x1 conv on a packed map (e.g. the VAD head after its last binary layer):
 * per pixel, the set bits are walked (count-trailing-zeros, clear lowest) and each adds its
 * weight column to OB float accumulators held in registers. W float [O][C];
 * Y float [N, O, H, W]. signed_input: bits are {-1,+1}: y = 2 * sum(set) - rowsum.
 * ------------------------------------------------------------------------------------- */
NRQC_INLINE int32_t nrqc_bits_conv1x1_f32(const uint32_t *x, const float *w, float *y, int32_t N, int32_t H,
                                          int32_t W, int32_t Wi, int32_t C, int32_t O, int32_t signed_input,
                                          int32_t OB) {
  /* OB divides O and is a constant at the call site: the OB accumulators are registers */
  const int32_t HW = H * W;
  for (int32_t ob = 0; ob < O; ob += OB) {
    float rowsum[16];
    nrqc_rowsums(rowsum, w + ob * C, C, OB, signed_input);
    for (int32_t n = 0; n < N; n++) {
      for (int32_t i = 0; i < HW; i++) {
        NRQC_BITWALK16(a, x + (n * HW + i) * Wi, w + ob * C, Wi, C, OB);
        float *yp = y + (n * O + ob) * HW + i;
#pragma GCC unroll 16
        for (int32_t k = 0; k < OB; k++) yp[k * HW] = signed_input ? 2.0f * a[k] - rowsum[k] : a[k];
      }
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------
 * The whole float head after a packed map, per output pixel (e.g. the VAD's 1x1 32->16 conv
 * + bias + ReLU + 1x1 16->1 conv + bias): the set-bit walk of nrqc_bits_conv1x1_f32 into O
 * (<= 16) float accumulators in registers, then h = max(acc + b1, 0) (NaN kept, as the
 * model's NaN-propagating ReLU) and y[o2] = b2[o2] + sum_k w2[o2][k] * h[k]. No O-channel
 * float map exists. W1 float [O][C], b1 [O], W2 [O2][O], b2 [O2]; Y float [N, O2, H, W].
 * ------------------------------------------------------------------------------------- */
NRQC_INLINE int32_t nrqc_bits_head_f32(const uint32_t *x, const float *w, const float *b1, const float *w2,
                                       const float *b2, float *y, int32_t N, int32_t H, int32_t W, int32_t Wi,
                                       int32_t C, int32_t O, int32_t O2, int32_t signed_input) {
  const int32_t HW = H * W;
  float rowsum[16];
  nrqc_rowsums(rowsum, w, C, O, signed_input);
  for (int32_t n = 0; n < N; n++) {
    for (int32_t i = 0; i < HW; i++) {
      NRQC_BITWALK16(a, x + (n * HW + i) * Wi, w, Wi, C, O);
      for (int32_t o2 = 0; o2 < O2; o2++) {
        float acc = b2[o2];
#pragma GCC unroll 16
        for (int32_t k = 0; k < O; k++) {
          float h = (signed_input ? 2.0f * a[k] - rowsum[k] : a[k]) + b1[k];
          h = h < 0.0f ? 0.0f : h;  /* a NaN compares false and stays */
          acc += w2[o2 * O + k] * h;
        }
        y[(n * O2 + o2) * HW + i] = acc;
      }
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------
 * Float conv (groups 1, any stride / padding / dilation), + bias, optional ReLU (NaN kept,
 * as the model's NaN-propagating ReLU): register-blocked accumulators. Per block of 4
 * output channels and 2 horizontally adjacent output pixels, 8 float accumulators stay in
 * FPU registers over the whole reduction (C x KH x KW): per tap 2 input loads, 4 weight loads
 * (shared by both pixels), 8 VFMA, i.e. 1.75 instructions per MAC before loop overhead.
 * Border pixels (a tap outside the input horizontally) take the same loop one pixel at a
 * time with the bounds checked. Rows outside the input are skipped per ky.
 * X float [N, C, H, W]; W4 float [Co4/4][C][KH][KW][4] (zero past Co); B float [Co4];
 * Y float [N, Co, HO, WO].
 * ------------------------------------------------------------------------------------- */
NRQC_INLINE void nrqc_f32_conv_px(const float *x, const float *w4, int32_t C, int32_t H, int32_t W, int32_t KH,
                                  int32_t KW, int32_t iy0, int32_t ix0, int32_t DH, int32_t DW, int32_t NPX,
                                  int32_t SW, int32_t checked, float *acc) {
  /* NPX (1 or 2) pixels at input columns ix0 and ix0 + SW; acc[4 * p + k] */
  float a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  float b0 = acc[4], b1 = acc[5], b2 = acc[6], b3 = acc[7];
  for (int32_t c = 0; c < C; c++) {
    const float *xc = x + c * H * W;
    const float *wc = w4 + c * KH * KW * 4;
    for (int32_t ky = 0; ky < KH; ky++) {
      const int32_t iy = iy0 + ky * DH;
      if (iy < 0 || iy >= H) continue;
      const float *xr = xc + iy * W;
      const float *wr = wc + ky * KW * 4;
      for (int32_t kx = 0; kx < KW; kx++) {
        const int32_t ix = ix0 + kx * DW;
        const float *wk = wr + kx * 4;
        const float w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3];
        if (!checked || (ix >= 0 && ix < W)) {
          const float v = xr[ix];
          a0 += v * w0; a1 += v * w1; a2 += v * w2; a3 += v * w3;
        }
        if (NPX == 2) {
          const float u = xr[ix + SW];
          b0 += u * w0; b1 += u * w1; b2 += u * w2; b3 += u * w3;
        }
      }
    }
  }
  acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3; acc[4] = b0; acc[5] = b1; acc[6] = b2; acc[7] = b3;
}

NRQC_INLINE int32_t nrqc_f32_conv(const float *x, const float *w4, const float *bias, float *y, int32_t N,
                                  int32_t C, int32_t H, int32_t W, int32_t Co, int32_t KH, int32_t KW, int32_t SH,
                                  int32_t SW, int32_t PT, int32_t PL, int32_t DH, int32_t DW, int32_t HO, int32_t WO,
                                  int32_t relu) {
  /* output columns whose taps are all inside the input horizontally: [lo, hi) */
  int32_t lo = 0, hi = WO;
  while (lo < WO && lo * SW - PL < 0) lo++;
  while (hi > lo && (hi - 1) * SW - PL + (KW - 1) * DW >= W) hi--;
  for (int32_t n = 0; n < N; n++) {
    const float *xn = x + n * C * H * W;
    for (int32_t ob = 0; ob < Co; ob += 4) {
      const float *wb = w4 + ob * C * KH * KW;
      for (int32_t oy = 0; oy < HO; oy++) {
        const int32_t iy0 = oy * SH - PT;
        for (int32_t ox = 0; ox < WO;) {
          const int32_t inner = ox >= lo && ox + 1 < hi;
          const int32_t npx = inner ? 2 : 1;
          float acc[8] = {bias[ob], bias[ob + 1], bias[ob + 2], bias[ob + 3],
                          bias[ob], bias[ob + 1], bias[ob + 2], bias[ob + 3]};
          if (inner)
            nrqc_f32_conv_px(xn, wb, C, H, W, KH, KW, iy0, ox * SW - PL, DH, DW, 2, SW, 0, acc);
          else
            nrqc_f32_conv_px(xn, wb, C, H, W, KH, KW, iy0, ox * SW - PL, DH, DW, 1, SW, !(ox >= lo && ox < hi), acc);
          for (int32_t p = 0; p < npx; p++) {
#pragma GCC unroll 4
            for (int32_t k = 0; k < 4; k++) {
              if (ob + k >= Co) break;
              float v = acc[4 * p + k];
              if (relu) v = v < 0.0f ? 0.0f : v;  /* a NaN compares false and stays */
              y[((n * Co + ob + k) * HO + oy) * WO + ox + p] = v;
            }
          }
          ox += npx;
        }
      }
    }
  }
  return 0;
}

/* Float max pool, NCHW (channels folded into NC), any window / stride / padding (padding
 * never wins: it is skipped). NaN-propagating like the model's max: a NaN in the window gives
 * NaN (once m is NaN, `v > m` is false for every v). Y float [NC, HO, WO]. */
NRQC_INLINE int32_t nrqc_f32_maxpool(const float *x, float *y, int32_t NC, int32_t H, int32_t W, int32_t KH,
                                     int32_t KW, int32_t SH, int32_t SW, int32_t PT, int32_t PL, int32_t HO,
                                     int32_t WO) {
  for (int32_t i = 0; i < NC; i++) {
    const float *xc = x + i * H * W;
    for (int32_t oy = 0; oy < HO; oy++) {
      const int32_t y0 = oy * SH - PT;
      const int32_t ky0 = y0 < 0 ? -y0 : 0, ky1 = y0 + KH > H ? H - y0 : KH;
      for (int32_t ox = 0; ox < WO; ox++) {
        const int32_t x0 = ox * SW - PL;
        const int32_t kx0 = x0 < 0 ? -x0 : 0, kx1 = x0 + KW > W ? W - x0 : KW;
        const float *xp = xc + y0 * W + x0;
        float m = xp[ky0 * W + kx0];
        for (int32_t ky = ky0; ky < ky1; ky++)
          for (int32_t kx = kx0; kx < kx1; kx++) {
            const float v = xp[ky * W + kx];
            if (v > m || v != v) m = v;
          }
        *y++ = m;
      }
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------
 * int8 (or uint8, or float quantized on load) input x int8 weights: SMLAD (the all-integer
 * first layer). Per output pixel the receptive field is gathered once into int16 pairs in
 * s8 domain (x_s8 = q, or q - 128 for uint8; padding = pad_s8), then per block of 4 output
 * channels: LDRD of 4 input values, per channel LDRD of 4 weights + 2 SMLAD (16 MACs in 13
 * instructions). Weights w4 [Co4/4][R4/4][4][2] int32, each an int16 pair (lo = w[o][r],
 * hi = w[o][r + 1]) for receptive-field index r = (ky * KW + kx) * C + c (zero past R, Co).
 * Epilogue as int8_conv.py: acc + corr[o], then sigma * v >= thr (packed) or v * scale.
 * The source element (n, c, y, x) of the NCHW view is at n*sn + c*sc + y*sy + x*sx.
 * Float source: q = saturate(round_half_even(x / qscale) + zp) as ONNX QuantizeLinear
 * (qscale given as its float32 bit pattern)
 * (float32 division; rounding by the 1.5 * 2^23 trick, exact below 2^22 and saturating
 * above it anyway).
 * ------------------------------------------------------------------------------------- */
NRQC_INLINE int32_t nrqc_quant_s8(float v, float qscale, int32_t zp, int32_t uns) {
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  float r = (v / qscale + magic) - magic;
#ifdef NRQC_HAVE_DSP
  /* VCVT saturates to the int32 range (|x / s| beyond 2^31); QADD adds the zero point
   * without wrapping; SSAT/USAT clamp to the 8-bit range: 1 instruction each */
  int32_t q = __qadd((int32_t)r, zp);
  return uns ? (int32_t)__usat(q, 8) - 128 : (int32_t)__ssat(q, 8);
#else
  r = r > 1e6f ? 1e6f : (r < -1e6f ? -1e6f : r);
  int32_t q = (int32_t)r + zp;
  if (uns) { q = q < 0 ? 0 : q > 255 ? 255 : q; return q - 128; }
  return q < -128 ? -128 : q > 127 ? 127 : q;
#endif
}

NRQC_INLINE int32_t nrqc_s8_smlad_pixel_block(const uint32_t *xr, const int32_t *wp, int32_t R4, int32_t *a) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#ifdef NRQC_HAVE_DSP
  /* one asm statement per 16 MACs: GCC splits the LDRDs into single loads (measured 22
   * instructions per 16 MACs in C, 13 + loop here; unrolled by 4 to spread the loop) */
#pragma GCC unroll 4
  for (int32_t i = 0; i < R4 / 4; i++) {
    uint32_t x0, x1, w0, w1;
    __asm__("ldrd %[x0], %[x1], [%[xr]], #8\n\t"
            "ldrd %[w0], %[w1], [%[wp]], #8\n\tsmlad %[a0], %[x0], %[w0], %[a0]\n\tsmlad %[a0], %[x1], %[w1], %[a0]\n\t"
            "ldrd %[w0], %[w1], [%[wp]], #8\n\tsmlad %[a1], %[x0], %[w0], %[a1]\n\tsmlad %[a1], %[x1], %[w1], %[a1]\n\t"
            "ldrd %[w0], %[w1], [%[wp]], #8\n\tsmlad %[a2], %[x0], %[w0], %[a2]\n\tsmlad %[a2], %[x1], %[w1], %[a2]\n\t"
            "ldrd %[w0], %[w1], [%[wp]], #8\n\tsmlad %[a3], %[x0], %[w0], %[a3]\n\tsmlad %[a3], %[x1], %[w1], %[a3]"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xr] "+r"(xr), [wp] "+r"(wp),
              [x0] "=&r"(x0), [x1] "=&r"(x1), [w0] "=&r"(w0), [w1] "=&r"(w1)
            : : "memory");
  }
#else
  for (int32_t i = 0; i < R4 / 4; i++) {
    uint32_t x0 = xr[2 * i], x1 = xr[2 * i + 1];
#define NRQC_DOT2(x, w) ((int32_t)(int16_t)(x) * (int16_t)(w) + (int32_t)(int16_t)((x) >> 16) * (int16_t)((uint32_t)(w) >> 16))
    a0 += NRQC_DOT2(x0, wp[0]) + NRQC_DOT2(x1, wp[1]); a1 += NRQC_DOT2(x0, wp[2]) + NRQC_DOT2(x1, wp[3]);
    a2 += NRQC_DOT2(x0, wp[4]) + NRQC_DOT2(x1, wp[5]); a3 += NRQC_DOT2(x0, wp[6]) + NRQC_DOT2(x1, wp[7]);
#undef NRQC_DOT2
    wp += 8;
  }
#endif
  a[0] = a0; a[1] = a1; a[2] = a2; a[3] = a3;
  return 0;
}

NRQC_INLINE void nrqc_s8_gather(int16_t *rf, const void *x, int32_t src_kind, float qscale, int32_t zp,
                                int32_t q_uns, int32_t pad_s8, int32_t n, int32_t oy, int32_t ox, int32_t C,
                                int32_t H, int32_t W, int32_t KH, int32_t KW, int32_t SH, int32_t SW, int32_t PT,
                                int32_t PL, int32_t DH, int32_t DW, int32_t sn, int32_t sc, int32_t sy, int32_t sx,
                                int32_t Cs, int32_t R, int32_t R4) {
  /* tap (ky, kx) at rf[(ky * KW + kx) * Cs], Cs >= C (int8 weights: C rounded up to even) */
  for (int32_t ky = 0; ky < KH; ky++) {
    const int32_t iy = oy * SH - PT + ky * DH;
    for (int32_t kx = 0; kx < KW; kx++) {
      const int32_t ix = ox * SW - PL + kx * DW;
      int16_t *d = rf + (ky * KW + kx) * Cs;
      for (int32_t c = C; c < Cs; c++) d[c] = 0;
      if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
        for (int32_t c = 0; c < C; c++) d[c] = (int16_t)pad_s8;
        continue;
      }
      const int32_t base = n * sn + iy * sy + ix * sx;
      if (src_kind == 0) {
        const float *xs = (const float *)x + base;
        for (int32_t c = 0; c < C; c++) d[c] = (int16_t)nrqc_quant_s8(xs[c * sc], qscale, zp, q_uns);
      } else if (src_kind == 1) {
        const int8_t *xs = (const int8_t *)x + base;
        for (int32_t c = 0; c < C; c++) d[c] = xs[c * sc];
      } else {
        const uint8_t *xs = (const uint8_t *)x + base;
        for (int32_t c = 0; c < C; c++) d[c] = (int16_t)((int32_t)xs[c * sc] - 128);
      }
    }
  }
  for (int32_t r = R; r < R4; r++) rf[r] = 0;
}

/* ---------------------------------------------------------------------------------------
 * The same layer for a 1-D conv with stride 1 (KH == H == 1, SW == DW == 1, no pool), with
 * int8 weights (half the flash of int16 pairs) and TB output pixels per weight load
 * (register blocking over time): the window of pixel ox + t is the window of pixel ox moved
 * by Cp int16 values, so TB consecutive windows are one int16 buffer of TB + KW - 1 input
 * columns (each quantized once), and each weight word, sign-extended once (SXTB16, SXTB16
 * ROR 8), feeds 2 * TB SMLADs. Per 4 taps of one output channel: LDR + 2 SXTB16 +
 * TB x (LDRD + 2 SMLAD), i.e. (3 + 3 TB) / (4 TB) per MAC (0.875 at TB 6, + 3 per 4 words
 * of loop) against 13/16 with int16 pairs; int8 weights without the reuse measured 1.36.
 * Weights w8 [Co][R16/4] words, R = KW * Cp (Cp = C rounded up to even, so every pixel's
 * window is word aligned for LDRD; R16 = R rounded up to 16; zero past C and R), bytes
 * (w[r], w[r+2], w[r+1], w[r+3]): SXTB16 gives the pair (w[r], w[r+1]), ROR 8 (w[r+2],
 * w[r+3]), matching the input's natural int16 order. TB is a constant in 4..6 with
 * (TB - 1) * Cp * 2 + 24 <= 1020 (LDRD's immediate; cortex_m_smlad.time_block), or 1 (the
 * per-pixel path with a fused pool, plain C).
 * ------------------------------------------------------------------------------------- */
#define NRQC_TB_MAX 8
/* One weight word (4 taps) for 4..6 pixels: LDR, SXTB16, SXTB16 ROR 8, then per pixel t an
 * LDRD of its 4 inputs at t * Cp int16 further and 2 SMLAD. A loop of 4 words per asm
 * statement (the layout pads R to a multiple of 16): with C around it GCC ran out of the 13
 * registers (6 accumulators, 2 pointers, counter, 2 inputs, 2 extended weights) and moved
 * accumulators through the stack every word. */
#define NRQC_TB_W "ldr %[x0], [%[wp]], #4\n\tsxtb16 %[t0], %[x0]\n\tsxtb16 %[t1], %[x0], ror #8\n\t"
#define NRQC_TB_S(t, k) "ldrd %[x0], %[x1], [%[xr], #" #t "*%c[cp2]+" #k "*8]\n\tsmlad %[a" #t "], %[x0], %[t0], %[a" #t "]\n\tsmlad %[a" #t "], %[x1], %[t1], %[a" #t "]\n\t"
#define NRQC_TB4(k) NRQC_TB_W NRQC_TB_S(0, k) NRQC_TB_S(1, k) NRQC_TB_S(2, k) NRQC_TB_S(3, k)
#define NRQC_TB5(k) NRQC_TB4(k) NRQC_TB_S(4, k)
#define NRQC_TB6(k) NRQC_TB5(k) NRQC_TB_S(5, k)
#define NRQC_TB_LOOP(B)                                                                                \
  __asm__ volatile("1:\n\t" B(0) B(1) B(2) B(3) "adds %[xr], %[xr], #32\n\tsubs %[n], %[n], #1\n\tbne 1b"  \
                   : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [a4] "+r"(a4), [a5] "+r"(a5), \
                     [xr] "+r"(xr), [wp] "+r"(wp), [n] "+r"(n), [x0] "=&r"(x0), [x1] "=&r"(x1), [t0] "=&r"(t0), \
                     [t1] "=&r"(t1)                                                                    \
                   : [cp2] "n"(Cp * 2) : "memory", "cc")
NRQC_INLINE void nrqc_s8_tb_dot(const int16_t *xb, const uint32_t *wp, int32_t R16, int32_t Cp, int32_t TB,
                                int32_t *acc) {
#if defined(NRQC_HAVE_DSP) && (defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__))
  if (TB >= 4 && TB <= 6) {
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, n = R16 / 16;
    const int16_t *xr = xb;
    uint32_t x0, x1, t0, t1;
    if (TB == 6) NRQC_TB_LOOP(NRQC_TB6); else if (TB == 5) NRQC_TB_LOOP(NRQC_TB5); else NRQC_TB_LOOP(NRQC_TB4);
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3; acc[4] = a4; acc[5] = a5;
    return;
  }
#endif
  /* any TB (1: one pixel, as with a fused pool), or no DSP */
  for (int32_t t = 0; t < TB; t++) {
    int32_t a = 0;
    for (int32_t i = 0; i < R16 / 4; i++) {
      const uint32_t q = wp[i];
      const int16_t *x = xb + t * Cp + 4 * i;
      a += x[0] * (int8_t)q + x[1] * (int8_t)(q >> 16) + x[2] * (int8_t)(q >> 8) + x[3] * (int8_t)(q >> 24);
    }
    acc[t] = a;
  }
}

NRQC_INLINE int32_t nrqc_s8_conv1d_tb(const void *x, const uint32_t *w8, const int32_t *corr, const int32_t *sigma,
                                      const int32_t *thr, const float *scale, void *y, int32_t src_kind,
                                      float qscale, int32_t zp, int32_t q_uns, int32_t pad_s8, int32_t N,
                                      int32_t C, int32_t W, int32_t Co, int32_t KW, int32_t PL, int32_t WO,
                                      int32_t sn, int32_t sc, int32_t sx, int32_t out_float, int32_t TB) {
  const int32_t Cp = (C + 1) / 2 * 2, R16 = (KW * Cp + 15) / 16 * 16, Wo32 = (Co + 31) / 32, cols = TB + KW - 1;
  /* TB + KW - 1 columns, plus what a window reads past R up to R16 (their weights are 0) */
  int16_t xb[(TB + KW) * Cp + 16] __attribute__((aligned(8)));
  for (int32_t i = cols * Cp; i < (TB + KW) * Cp + 16; i++) xb[i] = 0;
  for (int32_t n = 0; n < N; n++) {
    for (int32_t ox0 = 0; ox0 < WO; ox0 += TB) {
      /* column j holds input column ox0 - PL + j; a block keeps KW - 1 columns of the last */
      const int32_t keep = ox0 == 0 ? 0 : KW - 1;
      if (keep) memmove(xb, xb + TB * Cp, (size_t)keep * Cp * sizeof(int16_t));
      for (int32_t j = keep; j < cols; j++) {
        int16_t *d = xb + j * Cp;
        /* a 1x1 "conv" at output column ox0 + j with left padding PL reads input column ox0 + j - PL */
        nrqc_s8_gather(d, x, src_kind, qscale, zp, q_uns, pad_s8, n, 0, ox0 + j, C, 1, W, 1, 1, 1, 1, 0, PL, 1, 1,
                       sn, sc, 0, sx, Cp, Cp, Cp);
      }
      const int32_t nt = WO - ox0 < TB ? WO - ox0 : TB;
      uint32_t bits[NRQC_TB_MAX][(Co + 31) / 32];
      for (int32_t t = 0; t < TB; t++)
        for (int32_t j = 0; j < Wo32; j++) bits[t][j] = 0;
      for (int32_t o = 0; o < Co; o++) {
        int32_t acc[NRQC_TB_MAX];
        nrqc_s8_tb_dot(xb, w8 + o * (R16 / 4), R16, Cp, TB, acc);
        for (int32_t t = 0; t < nt; t++) {
          const int32_t v = acc[t] + corr[o];
          if (out_float)
            ((float *)y)[(n * Co + o) * WO + ox0 + t] = (float)v * scale[o];
          else
            bits[t][o >> 5] |= (uint32_t)(sigma[o] * v >= thr[o]) << (o & 31);
        }
      }
      if (!out_float)
        for (int32_t t = 0; t < nt; t++)
          for (int32_t j = 0; j < Wo32; j++) ((uint32_t *)y)[(n * WO + ox0 + t) * Wo32 + j] = bits[t][j];
    }
  }
  return 0;
}

NRQC_INLINE int32_t nrqc_s8_conv_smlad(const void *x, const int32_t *w4, const int32_t *corr, const int32_t *sigma,
                                       const int32_t *thr, const float *scale, void *y, int32_t src_kind,
                                       uint32_t qscale_bits, int32_t zp, int32_t q_uns, int32_t pad_s8, int32_t N,
                                       int32_t C, int32_t H, int32_t W, int32_t Co, int32_t KH, int32_t KW,
                                       int32_t SH, int32_t SW, int32_t PT, int32_t PL, int32_t DH, int32_t DW,
                                       int32_t HO, int32_t WO, int32_t sn, int32_t sc, int32_t sy, int32_t sx,
                                       int32_t out_float, int32_t PKH, int32_t PKW, int32_t PSH, int32_t PSW,
                                       int32_t PPT, int32_t PPL, int32_t PHO, int32_t PWO, int32_t TB) {
  /* TB > 0: int8 weights [Co][R4/4] over taps of Cs = C rounded up to even (nrqc_s8_conv1d_tb) */
  const int32_t Cs = TB > 0 ? (C + 1) / 2 * 2 : C;
  const int32_t R = KH * KW * Cs, R4 = TB > 0 ? (R + 15) / 16 * 16 : (R + 3) / 4 * 4, Co4 = (Co + 3) / 4 * 4, Wo32 = (Co + 31) / 32;
  float qscale;  /* passed as its bit pattern: a printed decimal literal could round */
  memcpy(&qscale, &qscale_bits, sizeof qscale);
  if (TB > 0 && PKH * PKW == 1)  /* int8 weights, time-blocked: a 1-D stride-1 conv (the strategy checked) */
    return nrqc_s8_conv1d_tb(x, (const uint32_t *)w4, corr, sigma, thr, scale, y, src_kind, qscale, zp, q_uns,
                             pad_s8, N, C, W, Co, KW, PL, WO, sn, sc, sx, out_float, TB);
  int16_t rf[R4] __attribute__((aligned(8)));
  const int32_t slide = KH == 1 && H == 1 && SW == 1 && DW == 1 && PKH * PKW == 1 && KW > 1;
  for (int32_t n = 0; n < N; n++) {
    for (int32_t py = 0; py < PHO; py++) {
      for (int32_t px = 0; px < PWO; px++) {
        uint32_t bits[(Co + 31) / 32];
        for (int32_t j = 0; j < Wo32; j++) bits[j] = 0;
        for (int32_t ob = 0; ob < Co4; ob += 4) {
          int32_t v[4], hi[4], lo[4];
          int32_t first = 1;
          for (int32_t wa = 0; wa < PKH; wa++) {
            const int32_t oy = py * PSH - PPT + wa;
            if (oy < 0 || oy >= HO) continue;
            for (int32_t wb = 0; wb < PKW; wb++) {
              const int32_t ox = px * PSW - PPL + wb;
              if (ox < 0 || ox >= WO) continue;
              if (PKH * PKW > 1) {  /* pooled: one gather per window pixel and block */
                nrqc_s8_gather(rf, x, src_kind, qscale, zp, q_uns, pad_s8, n, oy, ox, C, H, W, KH, KW, SH, SW, PT,
                               PL, DH, DW, sn, sc, sy, sx, Cs, R, R4);
              } else if (ob == 0 && slide && ox > 0) {
                /* a 1-D conv with stride 1: the window moves by one column, so only the new
                 * column is quantized (the quantize costs ~10 instructions per element) */
                memmove(rf, rf + Cs, (size_t)(KW - 1) * Cs * sizeof(int16_t));
                nrqc_s8_gather(rf + (KW - 1) * Cs, x, src_kind, qscale, zp, q_uns, pad_s8, n, oy, ox, C, H, W, 1, 1,
                               SH, SW, PT, PL - (KW - 1) * DW, DH, DW, sn, sc, sy, sx, Cs, Cs, Cs);
              } else if (ob == 0) {  /* one gather per pixel */
                nrqc_s8_gather(rf, x, src_kind, qscale, zp, q_uns, pad_s8, n, oy, ox, C, H, W, KH, KW, SH, SW, PT,
                               PL, DH, DW, sn, sc, sy, sx, Cs, R, R4);
              }
              if (TB == 0) {
                nrqc_s8_smlad_pixel_block((const uint32_t *)rf, w4 + ob * (R4 / 4) * 2, R4, v);
              } else {  /* int8 weights with a fused pool: one pixel at a time (1.5 per MAC) */
                for (int32_t k = 0; k < 4; k++) {
                  int32_t one[NRQC_TB_MAX];
                  if (ob + k < Co) nrqc_s8_tb_dot(rf, (const uint32_t *)w4 + (ob + k) * (R4 / 4), R4, Cs, 1, one);
                  v[k] = ob + k < Co ? one[0] : 0;
                }
              }
              for (int32_t k = 0; k < 4; k++) {
                if (first || v[k] > hi[k]) hi[k] = v[k];
                if (first || v[k] < lo[k]) lo[k] = v[k];
              }
              first = 0;
            }
          }
          for (int32_t k = 0; k < 4 && ob + k < Co; k++) {
            const int32_t o = ob + k;
            const int32_t acc = (out_float || sigma[o] >= 0 ? hi[k] : lo[k]) + corr[o];
            if (out_float)
              ((float *)y)[((n * Co + o) * HO + py) * WO + px] = (float)acc * scale[o];
            else
              bits[o >> 5] |= (uint32_t)(sigma[o] * acc >= thr[o]) << (o & 31);
          }
        }
        if (!out_float)
          for (int32_t j = 0; j < Wo32; j++) ((uint32_t *)y)[((n * PHO + py) * PWO + px) * Wo32 + j] = bits[j];
      }
    }
  }
  return 0;
}

#endif /* NRQC_DSP_H_ */
