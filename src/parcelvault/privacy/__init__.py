"""Pure privacy rules: the policy model, disclosure and masking. No I/O beyond reading text."""
