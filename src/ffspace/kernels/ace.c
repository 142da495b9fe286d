/* Linear ACE energies and forces without autograd, in double precision.
 *
 * Built on the user's machine at first use by ffspace/kernels/build.py (gcc -std=c11 -O3 -march=native -fopenmp) and
 * called through ctypes by ffspace/potential/native.py, which derives every table below from a model package
 * (weights are data, never code). The mathematics is that of ffspace/models/ace.py, whose forward pass is the
 * reference; ffspace/potential/analytic.py writes the same derivative with torch operations.
 *
 * Atoms are sorted by element and taken LANES at a time ("blocks"): the polynomial of a block runs with the atoms
 * as the innermost, contiguous, fixed-length axis, so every inner loop is one SIMD instruction and all atoms of a
 * block share their weights. Per block:
 *   1. per atom, A_k,lm = (1/n̄) Σ_j R_n(r_ij) Y_lm(r̂_ij), channel k = (element of j, n)   (and A' when separate)
 *   2. E = w0 + w1·A_0 + ½ A·(W + Wᵀ)A + Σ_slots Σ_entries w U_ab,(p,m3) A'_c,m3, U_ab,(p,m3) = Σ_nz C A'_a,m1 A'_b,m2
 *      (one slot at a time, so U stays in the L1 cache), and G = ∂E/∂A by the same products read backwards;
 *   3. per edge, ∂E_i/∂r_ij = (1/n̄) Σ G ∂(R Y)/∂r_ij (radial part along r̂, tangential part from ∇Y).
 * Blocks are independent (one thread each); the edges' gradients are scattered to the forces in one serial pass.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#define LANES 8
#define MAX_Y 25  /* harmonics up to l = 4 */
#define MAX_MONO 35  /* monomials of degree ≤ 4 */

typedef struct {
    int32_t n_el, n_rbf, d;        /* channels K = n_el·n_rbf; D = (lmax_a + 1)² harmonics in A */
    double cutoff, inv_avg;        /* Å; 1/n̄ */
    int32_t separate3;             /* 1: A' on its own radial functions; 0: A' is a slice of A */
    int32_t n_rbf3, d3;            /* A': radial functions, (lmax_3 + 1)² harmonics */
    double cutoff3;
    int32_t max_degree;            /* largest total degree of a monomial */
    int32_t n_mono;                /* monomials x^a y^b z^c of the unit vector */
    const int32_t *mono_exp;       /* (n_mono, 3) */
    const double *harm;            /* (n_mono, DY): Y_m = Σ_q harm[q][m] monomial_q */
    const double *harm_grad;       /* (3, n_mono, DY): ∂Y_m/∂u_k = Σ_q harm_grad[k][q][m] monomial_q */
    const double *w0, *w1;         /* (S,), (S, K) */
    int32_t has_pairs;
    const double *w2sym;           /* (S, K, K, D): the ν = 2 weight of pair (a, b) at m, plus its transpose */
    int32_t n_slots;               /* ν = 3 slots (p, m3); per slot: */
    const int32_t *cg_start;       /* (n_slots + 1,) its Clebsch–Gordan nonzeros */
    const int32_t *cg_m1, *cg_m2;
    const double *cg_val;
    const int32_t *group_start;    /* (n_slots + 1,) its groups: entries sharing the third factor c */
    const int32_t *group_c;        /* (groups,) */
    const int32_t *slot_m;         /* (n_slots,) m3 of the slot */
    const int32_t *entry_start;    /* (groups + 1,) */
    const int32_t *entry_ab;       /* (entries,) a·K3 + b */
    int32_t n_entries;
    const double *w3;              /* (S, entries) */
} AceParams;

static int harmonics_count(const AceParams *p) { return p->d > p->d3 ? p->d : p->d3; }

/* R_n(r) = sin((n+1)θ)/r · fcut and dR_n/dr, θ = πr/rc, fcut = (cos θ + 1)/2: one sin and one cos per edge,
 * the rest by the angle-addition recurrences. */
static void radial(double r, double rc, int n_rbf, double *R, double *dR) {
    double theta = M_PI * r / rc, s1 = sin(theta), c1 = cos(theta), inv_r = 1.0 / r;
    double fcut = 0.5 * (c1 + 1.0), dfcut = -0.5 * M_PI / rc * s1, k = M_PI / rc;
    double s = s1, c = c1, s_prev = 0.0, c_prev = 1.0;
    for (int n = 0; n < n_rbf; n++) {
        double f = (n + 1) * k, sr = s * inv_r;
        R[n] = sr * fcut;
        dR[n] = (f * c * inv_r - sr * inv_r) * fcut + sr * dfcut;
        double s_next = 2.0 * c1 * s - s_prev, c_next = 2.0 * c1 * c - c_prev;
        s_prev = s; c_prev = c; s = s_next; c = c_next;
    }
}

static void monomials(const AceParams *p, const double *u, double *mono) {
    double pw[3][8];
    for (int k = 0; k < 3; k++) {
        pw[k][0] = 1.0;
        for (int e = 1; e <= p->max_degree; e++) pw[k][e] = pw[k][e - 1] * u[k];
    }
    for (int q = 0; q < p->n_mono; q++) {
        const int32_t *e = p->mono_exp + 3 * q;
        mono[q] = pw[0][e[0]] * pw[1][e[1]] * pw[2][e[2]];
    }
}

/* The first monomial of degree d (monomials come in order of degree: 1, 3, 6, 10, ... of them). */
#define MONO_START(d) ((d) * ((d) + 1) * ((d) + 2) / 6)

/* Y_m = Σ_q harm[q][m] monomial_q: Y_l is homogeneous of degree l, so only that degree's monomials enter. */
static void harmonics(const AceParams *p, const double *mono, double *Y) {
    const int DY = p->d > p->d3 ? p->d : p->d3;
    for (int l = 0; l * l < DY; l++) {
        const int m0 = l * l, m1 = (l + 1) * (l + 1);
        for (int m = m0; m < m1; m++) Y[m] = 0.0;
        for (int q = MONO_START(l); q < MONO_START(l + 1); q++) {
            const double *h = p->harm + q * DY, x = mono[q];
            for (int m = m0; m < m1; m++) Y[m] += h[m] * x;
        }
    }
}

/* per edge of an atom: r, u[3], R, dR, R3, dR3, monomials, Y */
static int edge_stride(const AceParams *p) {
    return 4 + 2 * p->n_rbf + 2 * p->n_rbf3 + p->n_mono + harmonics_count(p);
}

typedef struct {  /* one thread's buffers */
    double *A, *A3, *G, *G3;       /* one atom: (K, D), (K3, D3) */
    double *Ab, *Gb, *Xb, *GXb;    /* the block: (K, D, LANES), (D3, K3, LANES) */
    double *U, *dU;                /* one slot: (K3·K3, LANES) */
    double *edge;                  /* (LANES, max_edges, stride) */
} Work;

static void *zalloc(size_t count) {  /* 64-byte aligned doubles */
    size_t bytes = ((count * sizeof(double) + 63) / 64) * 64;
    void *ptr = aligned_alloc(64, bytes ? bytes : 64);
    if (ptr) memset(ptr, 0, bytes);
    return ptr;
}

static int work_init(Work *w, const AceParams *p, int64_t max_edges) {
    const size_t K = p->n_el * p->n_rbf, K3 = p->n_el * p->n_rbf3;
    memset(w, 0, sizeof(*w));
    w->A = zalloc(K * p->d);
    w->G = zalloc(K * p->d);
    w->A3 = zalloc(K3 * p->d3);
    w->G3 = zalloc(K3 * p->d3);
    w->Ab = zalloc(K * p->d * LANES);
    w->Gb = zalloc(K * p->d * LANES);
    w->Xb = zalloc(K3 * p->d3 * LANES);
    w->GXb = zalloc(K3 * p->d3 * LANES);
    w->U = zalloc(K3 * K3 * LANES);
    w->dU = zalloc(K3 * K3 * LANES);
    w->edge = zalloc((size_t)edge_stride(p) * (size_t)(max_edges + 1) * LANES);
    return w->A && w->G && w->A3 && w->G3 && w->Ab && w->Gb && w->Xb && w->GXb && w->U && w->dU && w->edge;
}

static void work_free(Work *w) {
    free(w->A); free(w->G); free(w->A3); free(w->G3); free(w->Ab); free(w->Gb); free(w->Xb); free(w->GXb);
    free(w->U); free(w->dU); free(w->edge);
}

/* Step 1 for one atom: its edges' radial functions and harmonics into `buf`, its bases into w->A (and w->A3). */
static void atom_bases(const AceParams *p, int64_t i, const int64_t *start, const int64_t *order,
                       const int64_t *edge_j, const int64_t *species, const double *vec, Work *w, double *buf0) {
    const int D = p->d, D3 = p->d3, DY = harmonics_count(p), stride = edge_stride(p);
    const int K = p->n_el * p->n_rbf, K3 = p->n_el * p->n_rbf3;
    const double rc2 = p->cutoff * p->cutoff;
    memset(w->A, 0, sizeof(double) * K * D);
    if (p->separate3) memset(w->A3, 0, sizeof(double) * K3 * D3);
    for (int64_t q = 0; q < start[i + 1] - start[i]; q++) {
        int64_t e = order ? order[start[i] + q] : start[i] + q;
        double *buf = buf0 + q * stride;
        const double *v = vec + 3 * e;
        double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
        if (!(r2 < rc2) || r2 == 0.0) {
            buf[0] = -1.0;  /* beyond the cutoff (a Verlet skin's edges): no contribution */
            continue;
        }
        double r = sqrt(r2), *u = buf + 1, *R = buf + 4, *dR = R + p->n_rbf;
        double *R3 = dR + p->n_rbf, *dR3 = R3 + p->n_rbf3, *mono = dR3 + p->n_rbf3, *Y = mono + p->n_mono;
        buf[0] = r;
        for (int k = 0; k < 3; k++) u[k] = v[k] / r;
        radial(r, p->cutoff, p->n_rbf, R, dR);
        monomials(p, u, mono);
        harmonics(p, mono, Y);
        const int sj = (int)species[edge_j[e]];
        double *Aj = w->A + (int64_t)sj * p->n_rbf * D;
        for (int n = 0; n < p->n_rbf; n++) {
            const double rn = R[n] * p->inv_avg;
            for (int m = 0; m < D; m++) Aj[n * D + m] += rn * Y[m];
        }
        if (p->separate3) {
            if (r < p->cutoff3) {
                radial(r, p->cutoff3, p->n_rbf3, R3, dR3);
            } else {
                for (int n = 0; n < p->n_rbf3; n++) R3[n] = dR3[n] = 0.0;
            }
            double *A3j = w->A3 + (int64_t)sj * p->n_rbf3 * D3;
            for (int n = 0; n < p->n_rbf3; n++) {
                const double rn = R3[n] * p->inv_avg;
                for (int m = 0; m < D3; m++) A3j[n * D3 + m] += rn * Y[m];
            }
        }
    }
}

/* Step 3 for one atom: ∂E/∂r_ij of its edges into dvec, from G (w->G, w->G3) and the edge data of step 1. */
static void atom_gradient(const AceParams *p, int64_t i, const int64_t *start, const int64_t *order,
                          const int64_t *edge_j, const int64_t *species, Work *w, const double *buf0, double *dvec) {
    const int D = p->d, D3 = p->d3, DY = harmonics_count(p), stride = edge_stride(p);
    for (int64_t q = 0; q < start[i + 1] - start[i]; q++) {
        int64_t e = order ? order[start[i] + q] : start[i] + q;
        const double *buf = buf0 + q * stride;
        double *out = dvec + 3 * e;
        if (buf[0] < 0.0) {
            out[0] = out[1] = out[2] = 0.0;
            continue;
        }
        const double r = buf[0], *u = buf + 1, *R = buf + 4, *dR = R + p->n_rbf;
        const double *R3 = dR + p->n_rbf, *dR3 = R3 + p->n_rbf3, *mono = dR3 + p->n_rbf3, *Y = mono + p->n_mono;
        const int sj = (int)species[edge_j[e]];
        const double *h = w->G + (int64_t)sj * p->n_rbf * D;
        double along = 0.0, pv[MAX_Y];  /* pv: Σ_n G R_n per harmonic */
        for (int m = 0; m < DY; m++) pv[m] = 0.0;
        for (int n = 0; n < p->n_rbf; n++) {
            double hy = 0.0;
#pragma omp simd reduction(+ : hy)
            for (int m = 0; m < D; m++) {
                hy += h[n * D + m] * Y[m];
                pv[m] += h[n * D + m] * R[n];
            }
            along += hy * dR[n];
        }
        if (p->separate3) {
            const double *h3 = w->G3 + (int64_t)sj * p->n_rbf3 * D3;
            for (int n = 0; n < p->n_rbf3; n++) {
                double hy = 0.0;
#pragma omp simd reduction(+ : hy)
                for (int m = 0; m < D3; m++) {
                    hy += h3[n * D3 + m] * Y[m];
                    pv[m] += h3[n * D3 + m] * R3[n];
                }
                along += hy * dR3[n];
            }
        }
        double g[3];  /* ∇_u Σ_m pv_m Y_m(u) = Σ_q mono_q Σ_m harm_grad[k][q][m] pv_m; ∇Y_l lives on degree l-1 */
        for (int k = 0; k < 3; k++) {
            double acc = 0.0;
            for (int l = 1; l <= p->max_degree; l++) {
                const int m0 = l * l, m1 = (l + 1) * (l + 1) < DY ? (l + 1) * (l + 1) : DY;
                for (int q2 = MONO_START(l - 1); q2 < MONO_START(l); q2++) {
                    const double *hg = p->harm_grad + ((int64_t)k * p->n_mono + q2) * DY;
                    double t = 0.0;
                    for (int m = m0; m < m1; m++) t += hg[m] * pv[m];
                    acc += t * mono[q2];
                }
            }
            g[k] = acc;
        }
        const double ug = g[0] * u[0] + g[1] * u[1] + g[2] * u[2];
        for (int k = 0; k < 3; k++) out[k] = p->inv_avg * (along * u[k] + (g[k] - ug * u[k]) / r);
    }
}

/* Step 2 for a block of atoms of element s: energies (LANES,) and G = ∂E/∂A in w->Gb (and w->GXb). */
static void block_energy(const AceParams *p, int s, Work *w, double *energy) {
    const int K = p->n_el * p->n_rbf, D = p->d, K3 = p->n_el * p->n_rbf3, D3 = p->d3, KK = K3 * K3;
    const double *restrict Ab = w->Ab;
    double *restrict Gb = w->Gb;
    double e[LANES];
    memset(Gb, 0, sizeof(double) * K * D * LANES);
    for (int L = 0; L < LANES; L++) e[L] = p->w0[s];
    const double *w1 = p->w1 + (int64_t)s * K;
    for (int k = 0; k < K; k++) {
        for (int L = 0; L < LANES; L++) {
            e[L] += w1[k] * Ab[(k * D) * LANES + L];
            Gb[(k * D) * LANES + L] += w1[k];
        }
    }
    if (p->has_pairs) {  /* G += (W + Wᵀ) A, E += ½ A·(W + Wᵀ) A */
        const double *ws = p->w2sym + (int64_t)s * K * K * D;
        double e2[LANES] = {0};
        for (int a = 0; a < K; a++) {
            double g[MAX_Y * LANES];
            memset(g, 0, sizeof(double) * D * LANES);
            for (int b = 0; b < K; b++) {
                const double *wab = ws + ((int64_t)a * K + b) * D, *ab = Ab + (int64_t)b * D * LANES;
                for (int m = 0; m < D; m++) {
                    const double wm = wab[m];
                    if (wm == 0.0) continue;
                    for (int L = 0; L < LANES; L++) g[m * LANES + L] += wm * ab[m * LANES + L];
                }
            }
            const double *aa = Ab + (int64_t)a * D * LANES;
            double *ga = Gb + (int64_t)a * D * LANES;
            for (int q = 0; q < D * LANES; q++) {
                e2[q % LANES] += aa[q] * g[q];
                ga[q] += g[q];
            }
        }
        for (int L = 0; L < LANES; L++) e[L] += 0.5 * e2[L];
    }
    if (p->n_entries) {
        double *restrict X = w->Xb, *restrict GX = w->GXb, *restrict U = w->U, *restrict dU = w->dU;
        memset(GX, 0, sizeof(double) * K3 * D3 * LANES);
        const double *w3 = p->w3 + (int64_t)s * p->n_entries;
        for (int sl = 0; sl < p->n_slots; sl++) {
            memset(U, 0, sizeof(double) * KK * LANES);
            memset(dU, 0, sizeof(double) * KK * LANES);
            /* U_ab = Σ_nz C A'_a,m1 A'_b,m2 for this slot */
            for (int z = p->cg_start[sl]; z < p->cg_start[sl + 1]; z++) {
                const double v = p->cg_val[z], *x1 = X + p->cg_m1[z] * K3 * LANES, *x2 = X + p->cg_m2[z] * K3 * LANES;
                for (int a = 0; a < K3; a++) {
                    double c1[LANES];
                    for (int L = 0; L < LANES; L++) c1[L] = v * x1[a * LANES + L];
                    double *row = U + (int64_t)a * K3 * LANES;
                    for (int b = 0; b < K3; b++)
                        for (int L = 0; L < LANES; L++) row[b * LANES + L] += c1[L] * x2[b * LANES + L];
                }
            }
            /* the entries of each group share their third factor A'_c,m3 */
            const int m3 = p->slot_m[sl];
            for (int gi = p->group_start[sl]; gi < p->group_start[sl + 1]; gi++) {
                const int xi = (m3 * K3 + p->group_c[gi]) * LANES;
                double acc[LANES] = {0}, x[LANES];
                for (int L = 0; L < LANES; L++) x[L] = X[xi + L];
                for (int en = p->entry_start[gi]; en < p->entry_start[gi + 1]; en++) {
                    const double we = w3[en];
                    const int ui = p->entry_ab[en] * LANES;
                    for (int L = 0; L < LANES; L++) {
                        acc[L] += we * U[ui + L];
                        dU[ui + L] += we * x[L];
                    }
                }
                for (int L = 0; L < LANES; L++) {
                    e[L] += acc[L] * x[L];
                    GX[xi + L] += acc[L];
                }
            }
            /* back through U to its two factors */
            for (int z = p->cg_start[sl]; z < p->cg_start[sl + 1]; z++) {
                const double v = p->cg_val[z];
                const int o1 = p->cg_m1[z] * K3 * LANES, o2 = p->cg_m2[z] * K3 * LANES;
                for (int a = 0; a < K3; a++) {
                    const double *row = dU + (int64_t)a * K3 * LANES;
                    double dot[LANES] = {0}, c1[LANES];
                    for (int b = 0; b < K3; b++)
                        for (int L = 0; L < LANES; L++) dot[L] += row[b * LANES + L] * X[o2 + b * LANES + L];
                    for (int L = 0; L < LANES; L++) {
                        GX[o1 + a * LANES + L] += v * dot[L];
                        c1[L] = v * X[o1 + a * LANES + L];
                    }
                    for (int b = 0; b < K3; b++)
                        for (int L = 0; L < LANES; L++) GX[o2 + b * LANES + L] += c1[L] * row[b * LANES + L];
                }
            }
        }
    }
    for (int L = 0; L < LANES; L++) energy[L] = e[L];
}

/* energies (N,) and forces (N, 3); edges (i, j, vec) grouped by i: those of atom a are order[start[a] ..
 * start[a+1]) (order NULL: the identity). dvec (E, 3) is scratch. Returns 0, or 1 when out of memory. */
int ace_energies_forces(const AceParams *p, int64_t n_atoms, const int64_t *species, const int64_t *start,
                        const int64_t *order, const int64_t *edge_j, const double *vec, int32_t n_threads,
                        double *energies, double *forces, double *dvec) {
    const int K = p->n_el * p->n_rbf, D = p->d, K3 = p->n_el * p->n_rbf3, D3 = p->d3;
    const int stride = edge_stride(p);
    int64_t max_edges = 0;
    for (int64_t a = 0; a < n_atoms; a++)
        if (start[a + 1] - start[a] > max_edges) max_edges = start[a + 1] - start[a];
    /* atoms sorted by element, cut into blocks of ≤ LANES atoms of one element */
    int64_t *sorted = malloc(sizeof(int64_t) * (n_atoms + 1)), *block_first = malloc(sizeof(int64_t) * (n_atoms + 1));
    int64_t *count = calloc(p->n_el + 1, sizeof(int64_t));
    if (!sorted || !block_first || !count) {
        free(sorted); free(block_first); free(count);
        return 1;
    }
    for (int64_t a = 0; a < n_atoms; a++) count[species[a] + 1]++;
    for (int s = 0; s < p->n_el; s++) count[s + 1] += count[s];
    for (int64_t a = 0; a < n_atoms; a++) sorted[count[species[a]]++] = a;
    int64_t n_blocks = 0;
    for (int64_t a = 0; a < n_atoms; a++)
        if (a == 0 || species[sorted[a]] != species[sorted[a - 1]] || a - block_first[n_blocks - 1] == LANES)
            block_first[n_blocks++] = a;
    block_first[n_blocks] = n_atoms;
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel num_threads(n_threads) reduction(|| : failed)
    {
        Work w;
        if (!work_init(&w, p, max_edges)) {
            failed = 1;
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t blk = 0; blk < n_blocks; blk++) {
                const int64_t first = block_first[blk];
                const int lanes = (int)(block_first[blk + 1] - first);
                const int s = (int)species[sorted[first]];
                memset(w.Ab, 0, sizeof(double) * K * D * LANES);
                for (int L = 0; L < lanes; L++) {
                    double *buf = w.edge + (int64_t)L * stride * (max_edges + 1);
                    atom_bases(p, sorted[first + L], start, order, edge_j, species, vec, &w, buf);
                    for (int q = 0; q < K * D; q++) w.Ab[q * LANES + L] = w.A[q];
                    for (int c = 0; c < K3; c++) {  /* A'ᵀ (D3, K3): its own density or a slice of A */
                        const double *src = p->separate3 ? w.A3 + c * D3
                                                         : w.A + ((c / p->n_rbf3) * p->n_rbf + c % p->n_rbf3) * D;
                        for (int m = 0; m < D3; m++) w.Xb[(m * K3 + c) * LANES + L] = src[m];
                    }
                }
                for (int L = lanes; L < LANES; L++)
                    for (int q = 0; q < K3 * D3; q++) w.Xb[q * LANES + L] = 0.0;
                double e[LANES];
                block_energy(p, s, &w, e);
                for (int L = 0; L < lanes; L++) {
                    const int64_t i = sorted[first + L];
                    energies[i] = e[L];
                    for (int q = 0; q < K * D; q++) w.G[q] = w.Gb[q * LANES + L];
                    for (int c = 0; c < K3; c++) {  /* ∂E/∂A' into G3, or the slice of G (the adjoint of the copy) */
                        double *dst = p->separate3 ? w.G3 + c * D3 : w.G + ((c / p->n_rbf3) * p->n_rbf + c % p->n_rbf3) * D;
                        for (int m = 0; m < D3; m++) {
                            const double gx = w.GXb[(m * K3 + c) * LANES + L];
                            dst[m] = p->separate3 ? gx : dst[m] + gx;
                        }
                    }
                    const double *buf = w.edge + (int64_t)L * stride * (max_edges + 1);
                    atom_gradient(p, i, start, order, edge_j, species, &w, buf, dvec);
                }
            }
        }
        work_free(&w);
    }
    free(sorted); free(block_first); free(count);
    if (failed) return 1;
    /* F_i = -∂E/∂r_i: each edge's ∂E/∂r_ij pushes i by +dvec and j by -dvec */
    memset(forces, 0, sizeof(double) * 3 * n_atoms);
    for (int64_t i = 0; i < n_atoms; i++) {
        for (int64_t q = start[i]; q < start[i + 1]; q++) {
            const int64_t e = order ? order[q] : q;
            const double *d = dvec + 3 * e;
            double *fi = forces + 3 * i, *fj = forces + 3 * edge_j[e];
            for (int k = 0; k < 3; k++) {
                fi[k] += d[k];
                fj[k] -= d[k];
            }
        }
    }
    return 0;
}
