// Package sale is the vocabulary every part of a purchase pod shares: the
// outcomes of a purchase that are not an order (the errors the problem
// table maps to codes), the sale's window (Schedule) and its public facts.
// It imports nothing of this repository, so that checkout, waitingroom,
// seatfeed and httpapi can all speak it without importing each other.
package sale

// MaxBuyerIDLen bounds a buyer id in bytes (the purchase decoder refuses
// longer ones; the waiting room's tokens are sized by it).
const MaxBuyerIDLen = 128
