"""Program ids, limits and the x402 error reasons of the SVM ``exact`` scheme.

Reasons are the ones the x402 reference implementations answer with, so an
x402 client sees the same words from clawrouter as from any facilitator.
"""

from __future__ import annotations

TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
TOKEN_PROGRAMS = frozenset({TOKEN_PROGRAM, TOKEN_2022_PROGRAM})
ASSOCIATED_TOKEN_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
COMPUTE_BUDGET_PROGRAM = "ComputeBudget111111111111111111111111111111"
MEMO_PROGRAM = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
LIGHTHOUSE_PROGRAM = "L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95"

#: ComputeBudget instruction discriminators
SET_COMPUTE_UNIT_LIMIT = 2
SET_COMPUTE_UNIT_PRICE = 3
#: SPL Token instruction discriminator of TransferChecked
TRANSFER_CHECKED = 12

#: what a client sets: a TransferChecked and a 32-byte memo use about 19,300 units
DEFAULT_COMPUTE_UNIT_LIMIT = 20_000
DEFAULT_COMPUTE_UNIT_PRICE = 1  # micro-lamports per unit
#: the spec's reference cap on the compute unit price (5 lamports per unit)
MAX_COMPUTE_UNIT_PRICE = 5_000_000
#: stricter than the spec (which caps only the price): the fee payer pays price x limit, so the
#: limit is capped too, and so is their product (the priority fee, in lamports)
MAX_COMPUTE_UNIT_LIMIT = 200_000
MAX_PRIORITY_FEE_LAMPORTS = 50_000
#: a payment's blockhash must stay valid this many more slots (~0.4 s each) when it is verified,
#: so that the call and its settlement fit in the blockhash's life
MIN_BLOCKHASH_SLOTS = 100
#: how old the blockhash a challenge offers (extra.recentBlockhash) may be
BLOCKHASH_HINT_SECONDS = 2.0
MAX_MEMO_BYTES = 256
#: a random memo nonce: 16 bytes, hex-encoded
MEMO_NONCE_BYTES = 16
#: how long a settled or settling transaction is remembered (twice a blockhash's life)
SETTLEMENT_TTL_SECONDS = 120

# --- x402 error reasons -------------------------------------------------------------
ERR_INVALID_PAYLOAD = "invalid_exact_svm_payload_transaction"
ERR_DECODE = "invalid_exact_svm_payload_transaction_could_not_be_decoded"
ERR_INSTRUCTION_COUNT = "invalid_exact_svm_payload_transaction_instructions_length"
ERR_COMPUTE_LIMIT = "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction"
ERR_COMPUTE_PRICE = "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction"
ERR_COMPUTE_PRICE_TOO_HIGH = "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high"
ERR_COMPUTE_LIMIT_TOO_HIGH = "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high"
ERR_BLOCKHASH_UNKNOWN = "invalid_exact_svm_payload_transaction_blockhash_unknown"
ERR_BLOCKHASH_EXPIRING = "invalid_exact_svm_payload_transaction_blockhash_expiring"
ERR_INVALID_REQUIREMENTS = "invalid_payment_requirements"
ERR_NO_TRANSFER = "invalid_exact_svm_payload_no_transfer_instruction"
ERR_NOT_TRANSFER_CHECKED = "invalid_exact_svm_payload_transaction_instruction_not_spl_token_transfer_checked"
ERR_UNKNOWN_FOURTH = "invalid_exact_svm_payload_unknown_fourth_instruction"
ERR_UNKNOWN_FIFTH = "invalid_exact_svm_payload_unknown_fifth_instruction"
ERR_UNKNOWN_SIXTH = "invalid_exact_svm_payload_unknown_sixth_instruction"
ERR_MINT_MISMATCH = "invalid_exact_svm_payload_mint_mismatch"
ERR_RECIPIENT_MISMATCH = "invalid_exact_svm_payload_recipient_mismatch"
ERR_AMOUNT_MISMATCH = "invalid_exact_svm_payload_amount_mismatch"
ERR_MISSING_FEE_PAYER = "invalid_exact_svm_payload_missing_fee_payer"
ERR_FEE_PAYER_NOT_MANAGED = "fee_payer_not_managed_by_facilitator"
ERR_FEE_PAYER_MISMATCH = "invalid_exact_svm_payload_fee_payer_mismatch"
ERR_FEE_PAYER_IN_ACCOUNTS = "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts"
ERR_FEE_PAYER_TRANSFERRING = "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds"
ERR_MEMO_COUNT = "invalid_exact_svm_payload_memo_count"
ERR_MEMO_MISMATCH = "invalid_exact_svm_payload_memo_mismatch"
ERR_MISSING_SIGNATURE = "invalid_exact_svm_payload_transaction_signature"
ERR_SENDER_ATA_NOT_FOUND = "invalid_exact_svm_payload_transaction_sender_ata_not_found"
ERR_RECEIVER_ATA_NOT_FOUND = "invalid_exact_svm_payload_transaction_receiver_ata_not_found"
ERR_SIMULATION_FAILED = "transaction_simulation_failed"
ERR_TRANSACTION_FAILED = "transaction_failed"
ERR_DUPLICATE_SETTLEMENT = "duplicate_settlement"
ERR_INSUFFICIENT_FUNDS = "insufficient_funds"
