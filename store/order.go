package store

import "math/rand/v2"

// OrderQueues returns the order in which to try queues. With nil weights it
// returns queues unchanged (strict priority). Otherwise it draws queues one by
// one without replacement, each with probability proportional to its weight,
// so a queue of weight 3 is tried first three times as often as one of weight
// 1. weights must have one positive entry per queue. The result is a new slice
// when weighted; r may be nil to use the global source.
func OrderQueues(queues []string, weights []int, r *rand.Rand) []string {
	if weights == nil || len(queues) < 2 {
		return queues
	}
	out := make([]string, 0, len(queues))
	idx := make([]int, len(queues))
	total := 0
	for i := range idx {
		idx[i] = i
		total += weights[i]
	}
	for len(idx) > 0 {
		var n int
		if r != nil {
			n = r.IntN(total)
		} else {
			n = rand.IntN(total) //nolint:gosec // G404: a fair draw between queues needs no secrecy
		}
		for j, qi := range idx {
			n -= weights[qi]
			if n < 0 {
				out = append(out, queues[qi])
				total -= weights[qi]
				idx = append(idx[:j], idx[j+1:]...)
				break
			}
		}
	}
	return out
}

// Validate checks lease params and returns every problem joined.
func (p *LeaseParams) Validate() error {
	var errs []error
	if err := CheckNamespace(p.Namespace); err != nil {
		errs = append(errs, err)
	}
	if len(p.Queues) == 0 {
		errs = append(errs, invalid(ErrInvalidOption, "queues", "at least one queue is required"))
	}
	for _, q := range p.Queues {
		if err := CheckName("queues", q); err != nil {
			errs = append(errs, err)
		}
	}
	if p.Weights != nil {
		if len(p.Weights) != len(p.Queues) {
			errs = append(errs, invalid(ErrInvalidOption, "weights", "%d weights for %d queues", len(p.Weights), len(p.Queues)))
		}
		for _, w := range p.Weights {
			if w <= 0 {
				errs = append(errs, invalid(ErrInvalidOption, "weights", "weight %d is not positive", w))
			}
		}
	}
	for _, t := range p.Types {
		if err := CheckName("types", t); err != nil {
			errs = append(errs, err)
		}
	}
	if p.Max < 1 || p.Max > MaxBatch {
		errs = append(errs, invalid(ErrInvalidOption, "max", "%d is outside 1..%d", p.Max, MaxBatch))
	}
	if p.Duration <= 0 {
		errs = append(errs, invalid(ErrInvalidOption, "duration", "%s is not positive", p.Duration))
	}
	if p.Wait < 0 {
		errs = append(errs, invalid(ErrInvalidOption, "wait", "%s is negative", p.Wait))
	}
	return joinErrs(errs)
}

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return &joined{errs}
}

type joined struct{ errs []error }

func (j *joined) Error() string {
	s := j.errs[0].Error()
	for _, e := range j.errs[1:] {
		s += "; " + e.Error()
	}
	return s
}

func (j *joined) Unwrap() []error { return j.errs }
