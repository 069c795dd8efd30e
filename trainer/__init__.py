"""labtune.trainer: phased PEFT and full tuning."""
