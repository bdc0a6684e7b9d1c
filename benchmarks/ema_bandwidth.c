/* The memory-bandwidth bound of weight averaging (bench_ema.py's companion): SGD's
 * update with and without the average folded in (the loops of adamc's sgd variants,
 * compiled with adamc's flags), the same with non-temporal (streaming) stores, SGD
 * with momentum, and a read-only pass, at N float32 elements, one thread; median of R
 * interleaved rounds. Each loop runs at about the same bandwidth, so the average costs
 * the ratio of the bytes moved (SGD: 20 / 12 = 1.67x); streaming stores send the
 * arrays to DRAM although they fit in the last-level cache, and are slower.
 *
 *   gcc -O3 -ffp-contract=off -fno-math-errno -mavx512f -mavx512dq -mavx512vl  *       -mavx512bw benchmarks/ema_bandwidth.c -o /tmp/ema_bandwidth
 *   /tmp/ema_bandwidth [N=1000000] [R=41]                                            */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
typedef float T;
__attribute__((noinline)) void plain(T*restrict p,const T*restrict g,long n,T lr){for(long i=0;i<n;i++){p[i]=p[i]-lr*g[i];}}
__attribute__((noinline)) void ema(T*restrict p,const T*restrict g,T*restrict a,long n,T lr,T w){for(long i=0;i<n;i++){T v=p[i]-lr*g[i];p[i]=v;a[i]=a[i]+w*(v-a[i]);}}
__attribute__((noinline)) void ema_nt(T*restrict p,const T*restrict g,T*restrict a,long n,T lr,T w){
  __m512 L=_mm512_set1_ps(lr),W=_mm512_set1_ps(w);
  for(long i=0;i<n;i+=16){__m512 v=_mm512_sub_ps(_mm512_load_ps(p+i),_mm512_mul_ps(L,_mm512_load_ps(g+i)));
    _mm512_stream_ps(p+i,v);__m512 A=_mm512_load_ps(a+i);_mm512_stream_ps(a+i,_mm512_add_ps(A,_mm512_mul_ps(W,_mm512_sub_ps(v,A))));}}
__attribute__((noinline)) void plain_nt(T*restrict p,const T*restrict g,long n,T lr){
  __m512 L=_mm512_set1_ps(lr);
  for(long i=0;i<n;i+=16){_mm512_stream_ps(p+i,_mm512_sub_ps(_mm512_load_ps(p+i),_mm512_mul_ps(L,_mm512_load_ps(g+i))));}}
__attribute__((noinline)) void mom(T*restrict p,const T*restrict g,T*restrict b,long n,T lr,T bd){for(long i=0;i<n;i++){T bi=bd*b[i]+g[i];b[i]=bi;p[i]=p[i]-lr*bi;}}
__attribute__((noinline)) void mom_ema(T*restrict p,const T*restrict g,T*restrict b,T*restrict a,long n,T lr,T bd,T w){for(long i=0;i<n;i++){T bi=bd*b[i]+g[i];b[i]=bi;T v=p[i]-lr*bi;p[i]=v;a[i]=a[i]+w*(v-a[i]);}}
__attribute__((noinline)) double readsum(const T*restrict x,long n){__m512 s=_mm512_setzero_ps();for(long i=0;i<n;i+=16)s=_mm512_add_ps(s,_mm512_load_ps(x+i));return _mm512_reduce_add_ps(s);}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  long n=argc>1?atol(argv[1]):1000000; int R=argc>2?atoi(argv[2]):41;
  T *p=aligned_alloc(64,n*4),*g=aligned_alloc(64,n*4),*a=aligned_alloc(64,n*4),*b=aligned_alloc(64,n*4),*q=aligned_alloc(64,n*4);
  for(long i=0;i<n;i++){p[i]=q[i]=(T)(i%97)*0.01f;g[i]=(T)(i%13)*1e-3f;a[i]=b[i]=0;}
  const char*names[]={"plain","ema","plain_nt","ema_nt","mom","mom_ema","read1"};
  double t[7][64]; volatile double sink=0;
  for(int r=0;r<R;r++)for(int k=0;k<7;k++){double t0=now();
    switch(k){case 0:plain(p,g,n,1e-4f);break;case 1:ema(q,g,a,n,1e-4f,1e-3f);break;
      case 2:plain_nt(p,g,n,1e-4f);break;case 3:ema_nt(q,g,a,n,1e-4f,1e-3f);break;
      case 4:mom(p,g,b,n,1e-4f,0.9f);break;case 5:mom_ema(q,g,b,a,n,1e-4f,0.9f,1e-3f);break;
      case 6:sink+=readsum(g,n);break;}
    t[k][r]=now()-t0;}
  double med[7];
  for(int k=0;k<7;k++){qsort(t[k],R,sizeof(double),cmp);med[k]=t[k][R/2];}
  int bytes[7]={12,20,12,20,20,28,4};
  for(int k=0;k<7;k++)printf("%-9s %8.1f us  %6.1f GB/s (%d B/elt)\n",names[k],med[k]*1e6,bytes[k]*n/med[k]/1e9,bytes[k]);
  printf("ratios: ema/plain %.2f  ema_nt/plain %.2f  ema_nt/plain_nt %.2f  mom_ema/mom %.2f\n",med[1]/med[0],med[3]/med[0],med[3]/med[2],med[5]/med[4]);
  return 0;}
