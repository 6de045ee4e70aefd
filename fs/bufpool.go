package fs

import (
	"math/bits"
	"sync"

	"github.com/ezfs/ezfs/crypto"
)

// Buffers for a request's worth of sealed or plain blocks come from pools by size
// class: a power of two of blocks, up to one 1 MiB FUSE request plus the partial
// blocks around it. A read of a small file takes a small buffer; with one pool of
// 1 MiB buffers it took a 1 MiB one, and after each garbage collection emptied the
// pool, made (and zeroed) a new one, which brought the next collection sooner.
const maxBufBlocks = 1<<20/bs + 2

// bufClasses is bits.Len(maxBufBlocks-1)+1 (TestBufClasses): classes of 1, 2, 4, ...
// 256 blocks, and the top one of maxBufBlocks.
const bufClasses = 10

var bufPools [bufClasses]sync.Pool

// bufClass is the pool for n bytes: the smallest class of 2^c blocks that holds them,
// and the top class for anything larger than its halving.
func bufClass(n int) int {
	blocks := max(1, (n+crypto.CipherBlockLen-1)/crypto.CipherBlockLen)
	return min(bits.Len(uint(blocks-1)), len(bufPools)-1)
}

// classCap is the capacity of the buffers of class c.
func classCap(c int) int { return min(1<<c, maxBufBlocks) * crypto.CipherBlockLen }

// getBuf returns a buffer of length n; putBuf gives it back.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	p, _ := bufPools[c].Get().(*[]byte)
	if p == nil {
		b := make([]byte, 0, max(n, classCap(c)))
		p = &b
	}
	if cap(*p) < n { // only past the top class, which no FUSE request reaches
		*p = make([]byte, 0, n)
	}
	*p = (*p)[:n]
	return p
}

// putBuf returns a buffer to the pool of its capacity.
func putBuf(p *[]byte) {
	if c := bufClass(cap(*p)); cap(*p) >= classCap(c) {
		bufPools[c].Put(p)
	}
}
